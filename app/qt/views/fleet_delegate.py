"""Paints the fleet table's Devices column: one compact tile per device.

A tile shows the device index and utilisation, a utilisation sparkline, and four thin bars
(utilisation, memory, temperature, power; colours in BAR_COLORS, legend in the fleet view).
Exact values are in the cell's tooltip. Tiles flow left to right and wrap to the column's
width; the view sets the row height from `row_height`.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QStyle, QStyledItemDelegate

from ..models.fleet_model import COL_DEVICES, DEVICES_ROLE, DeviceTile

TILE_W, TILE_H, GAP = 58, 46, 6
BAR_COLORS = (QColor("#3b82f6"), QColor("#8b5cf6"), QColor("#f59e0b"), QColor("#ef4444"))
BAR_NAMES = ("utilisation", "memory", "temperature", "power")


def tiles_per_line(width: int) -> int:
    return max(1, (width - GAP) // (TILE_W + GAP))


def row_height(max_devices: int, width: int = 10_000) -> int:
    lines = max(1, math.ceil(max(1, max_devices) / tiles_per_line(width)))
    return lines * (TILE_H + GAP) + GAP


def bar_fractions(t: DeviceTile) -> tuple[float | None, ...]:
    def clamp(v):
        return None if v is None else max(0.0, min(1.0, v))
    return (
        clamp(None if t.util is None else t.util / 100.0),
        clamp(None if t.mem is None else t.mem / 100.0),
        clamp(None if t.temp is None else t.temp / 100.0),
        clamp(None if t.power is None else t.power / (t.power_limit or 500.0)),
    )


def tooltip(tiles: tuple[DeviceTile, ...]) -> str:
    def f(v, fmt):
        return "—" if v is None else fmt.format(v)
    rows = "".join(
        f"<tr><td>#{t.index}</td><td>{t.name}</td><td align=right>{f(t.util, '{:.0f}%')}</td>"
        f"<td align=right>{f(t.mem, '{:.0f}%')}</td><td align=right>{f(t.temp, '{:.0f} °C')}</td>"
        f"<td align=right>{f(t.power, '{:.0f} W')}</td></tr>" for t in tiles)
    return ("<table cellspacing=4><tr><th></th><th align=left>Device</th><th>Util</th>"
            f"<th>Memory</th><th>Temp</th><th>Power</th></tr>{rows}</table>")


class FleetDelegate(QStyledItemDelegate):
    def paint(self, painter: QPainter, option, index) -> None:
        if index.column() != COL_DEVICES:
            super().paint(painter, option, index)
            return
        tiles = index.data(DEVICES_ROLE) or ()
        if not tiles:
            super().paint(painter, option, index)
            return
        painter.save()
        painter.setClipRect(option.rect)
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())
        text_color = option.palette.text().color()
        track = QColor(text_color)
        track.setAlpha(30)
        font = QFont(option.font)
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.78))
        painter.setFont(font)
        r = option.rect
        per_line = tiles_per_line(r.width())
        lines = math.ceil(len(tiles) / per_line)
        top = r.y() + max(GAP // 2, (r.height() - lines * (TILE_H + GAP) + GAP) // 2)
        for i, t in enumerate(tiles):
            line, col = divmod(i, per_line)
            x = r.x() + GAP + col * (TILE_W + GAP)
            y = top + line * (TILE_H + GAP)
            self._paint_tile(painter, QRectF(x, y, TILE_W, TILE_H), t, text_color, track)
        painter.restore()

    def _paint_tile(self, p: QPainter, rect: QRectF, t: DeviceTile, text: QColor,
                    track: QColor) -> None:
        label_h = 13.0
        p.setPen(text)
        util = "—" if t.util is None else f"{t.util:.0f}%"
        p.drawText(QRectF(rect.x(), rect.y(), rect.width(), label_h),
                   Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, f"#{t.index}")
        p.drawText(QRectF(rect.x(), rect.y(), rect.width(), label_h),
                   Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, util)
        sr = QRectF(rect.x(), rect.y() + label_h + 1, rect.width(), 12.0)
        p.fillRect(sr, track)
        self._paint_spark(p, sr, t.spark)
        y = sr.bottom() + 3
        bar_h = (rect.bottom() - y - 3 * 2) / 4
        for k, frac in enumerate(bar_fractions(t)):
            br = QRectF(rect.x(), y + k * (bar_h + 2), rect.width(), bar_h)
            p.fillRect(br, track)
            if frac is not None:
                p.fillRect(QRectF(br.x(), br.y(), br.width() * frac, br.height()), BAR_COLORS[k])

    def _paint_spark(self, p: QPainter, rect: QRectF, values: np.ndarray) -> None:
        n = len(values)
        if n < 2:
            return
        path = QPainterPath()
        started = False
        dx = rect.width() / (n - 1)
        for i, v in enumerate(values):
            if v != v:  # NaN: a gap
                started = False
                continue
            pt = QPointF(rect.x() + i * dx,
                         rect.bottom() - rect.height() * max(0.0, min(1.0, float(v) / 100.0)))
            if started:
                path.lineTo(pt)
            else:
                path.moveTo(pt)
                started = True
        pen = QPen(BAR_COLORS[0])
        pen.setWidthF(1.2)
        p.setPen(pen)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.drawPath(path)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)

    def sizeHint(self, option, index) -> QSize:
        if index.column() == COL_DEVICES:
            n = len(index.data(DEVICES_ROLE) or ())
            return QSize(GAP + max(1, n) * (TILE_W + GAP), row_height(n))
        return super().sizeHint(option, index)
