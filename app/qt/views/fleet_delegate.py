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
from PySide6.QtGui import QColor, QFont, QPainter, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import QStyle, QStyledItemDelegate

from ..models.fleet_model import COL_DEVICES, DEVICES_ROLE, NODE_ID_ROLE, STAMP_ROLE, DeviceTile

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
    """Device tiles are rendered once per new sample into a cached pixmap per row; every
    other repaint (scrolling, hover, the other columns changing) just blits it."""

    CACHE_LIMIT = 512

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._cache: dict[str, tuple[tuple, QPixmap]] = {}

    def paint(self, painter: QPainter, option, index) -> None:
        if index.column() != COL_DEVICES:
            super().paint(painter, option, index)
            return
        tiles = index.data(DEVICES_ROLE) or ()
        if not tiles:
            super().paint(painter, option, index)
            return
        r = option.rect
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        dpr = painter.device().devicePixelRatioF() if painter.device() else 1.0
        key = (index.data(STAMP_ROLE), r.width(), r.height(), selected, dpr,
               option.palette.text().color().rgba(), option.palette.highlight().color().rgba())
        nid = index.data(NODE_ID_ROLE) or ""
        hit = self._cache.get(nid)
        if hit is None or hit[0] != key:
            if len(self._cache) > self.CACHE_LIMIT:
                self._cache.clear()
            pm = QPixmap(int(r.width() * dpr), int(r.height() * dpr))
            pm.setDevicePixelRatio(dpr)
            pm.fill(Qt.GlobalColor.transparent)
            p = QPainter(pm)
            self._paint_tiles(p, option, tiles, r.width(), r.height(), selected)
            p.end()
            hit = self._cache[nid] = (key, pm)
        painter.drawPixmap(r.topLeft(), hit[1])

    def _paint_tiles(self, painter: QPainter, option, tiles, width: int, height: int,
                     selected: bool) -> None:
        if selected:
            painter.fillRect(0, 0, width, height, option.palette.highlight())
        text_color = option.palette.text().color()
        track = QColor(text_color)
        track.setAlpha(30)
        font = QFont(option.font)
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.78))
        painter.setFont(font)
        per_line = tiles_per_line(width)
        lines = math.ceil(len(tiles) / per_line)
        top = max(GAP // 2, (height - lines * (TILE_H + GAP) + GAP) // 2)
        for i, t in enumerate(tiles):
            line, col = divmod(i, per_line)
            x = GAP + col * (TILE_W + GAP)
            y = top + line * (TILE_H + GAP)
            self._paint_tile(painter, QRectF(x, y, TILE_W, TILE_H), t, text_color, track)

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
        xs = rect.x() + np.arange(n) * (rect.width() / (n - 1))
        ys = rect.bottom() - rect.height() * np.clip(values, 0.0, 100.0) / 100.0
        pen = QPen(BAR_COLORS[0])
        pen.setWidthF(1.2)
        p.setPen(pen)  # no antialiasing: 12 px tall, and it costs more than the rest of a tile
        finite = np.isfinite(ys)
        if finite.all():
            runs = [(0, n)]
        else:  # NaN = a gap: draw each finite run on its own
            edges = np.flatnonzero(np.diff(np.concatenate(([0], finite.view(np.int8), [0]))))
            runs = list(zip(edges[::2], edges[1::2]))
        for a, b in runs:
            if b - a >= 2:
                p.drawPolyline(QPolygonF([QPointF(x, y) for x, y in
                                          zip(xs[a:b].tolist(), ys[a:b].tolist())]))

    def sizeHint(self, option, index) -> QSize:
        if index.column() == COL_DEVICES:
            n = len(index.data(DEVICES_ROLE) or ())
            return QSize(GAP + max(1, n) * (TILE_W + GAP), row_height(n))
        return super().sizeHint(option, index)
