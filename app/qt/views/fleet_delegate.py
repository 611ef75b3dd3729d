"""Paints the fleet table's Devices column: one compact, labelled line per device.

A line reads: device index, a utilisation bar with its percentage, a memory bar with
used / total, the temperature and power where the device reports them, and (when the
column is wide enough) a 60 s utilisation sparkline. Lines stack and, in a wide column,
flow into several columns. Exact values for every device are in the cell's tooltip; the
view sets the row height from `row_height`.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import QStyle, QStyledItemDelegate

from ..models.fleet_model import COL_DEVICES, DEVICES_ROLE, NODE_ID_ROLE, STAMP_ROLE, DeviceTile

LINE_H, GAP, PAD = 20, 3, 6
MIN_LINE_W, MAX_LINE_W = 300, 560      # a column of lines needs at least / uses at most this
SPARK_W = 56                           # sparkline width at the minimum line width
BAR_COLORS = (QColor("#3b82f6"), QColor("#8b5cf6"), QColor("#f59e0b"), QColor("#ef4444"))
GIB = 1024 ** 3


def columns_for(width: int, devices: int) -> int:
    return max(1, min(max(1, devices), (width - PAD) // (MIN_LINE_W + PAD)))


def row_height(max_devices: int, width: int = 10_000) -> int:
    lines = math.ceil(max(1, max_devices) / columns_for(width, max_devices))
    return lines * LINE_H + (lines - 1) * GAP + 2 * PAD


def fmt_memory(t: DeviceTile) -> str:
    if t.mem_used is not None and t.mem_total:
        return f"{t.mem_used / GIB:.1f} / {t.mem_total / GIB:.0f} GiB"
    return "—" if t.mem is None else f"{t.mem:.0f}%"


def fmt_extras(t: DeviceTile) -> str:
    parts = []
    if t.temp is not None:
        parts.append(f"{t.temp:.0f} °C")
    if t.power is not None:
        parts.append(f"{t.power:.0f} W")
    return " · ".join(parts)


def tooltip(tiles: tuple[DeviceTile, ...]) -> str:
    def f(v, fmt):
        return "—" if v is None else fmt.format(v)
    rows = "".join(
        f"<tr><td>#{t.index}</td><td>{t.name}</td><td align=right>{f(t.util, '{:.0f}%')}</td>"
        f"<td align=right>{fmt_memory(t)}</td><td align=right>{f(t.temp, '{:.0f} °C')}</td>"
        f"<td align=right>{f(t.power, '{:.0f} W')}</td></tr>" for t in tiles)
    return ("<table cellspacing=4><tr><th></th><th align=left>Device</th><th>Util</th>"
            f"<th>Memory</th><th>Temp</th><th>Power</th></tr>{rows}</table>")


class FleetDelegate(QStyledItemDelegate):
    """Device lines are rendered once per new sample into a cached pixmap per row; every
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
        track.setAlpha(22)
        font = QFont(option.font)
        font.setPointSizeF(max(7.5, font.pointSizeF() * 0.88))
        painter.setFont(font)
        fm = QFontMetrics(font)
        cols = columns_for(width, len(tiles))
        lines = math.ceil(len(tiles) / cols)
        col_w = min(MAX_LINE_W, (width - PAD * (cols + 1)) / cols)
        used_h = lines * LINE_H + (lines - 1) * GAP
        top = max(PAD // 2, (height - used_h) / 2)
        extras_w = max((fm.horizontalAdvance(fmt_extras(t)) for t in tiles), default=0)
        for i, t in enumerate(tiles):
            col, line = divmod(i, lines)       # fill column by column: #0 #1 under each other
            x = PAD + col * (col_w + PAD)
            y = top + line * (LINE_H + GAP)
            self._paint_line(painter, QRectF(x, y, col_w, LINE_H), t, text_color, track, fm,
                             extras_w)

    def _paint_line(self, p: QPainter, rect: QRectF, t: DeviceTile, text: QColor,
                    track: QColor, fm: QFontMetrics, extras_w: int) -> None:
        left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        muted = QColor(text)
        muted.setAlpha(150)
        idx_w = fm.horizontalAdvance("#00") + 6
        p.setPen(muted)
        p.drawText(QRectF(rect.x(), rect.y(), idx_w, rect.height()), left, f"#{t.index}")
        x = rect.x() + idx_w
        spark_w = 0
        if rect.width() - idx_w - extras_w >= 260:
            spark_w = max(SPARK_W, int(rect.width() * 0.2))
        tail = (extras_w + 8 if extras_w else 0) + (spark_w + 6 if spark_w else 0)
        avail = rect.right() - x - tail
        util_w = max(40.0, avail * 0.42)
        mem_w = max(40.0, avail - util_w - 6)
        bar_h = rect.height() - 4
        by = rect.y() + 2
        util = None if t.util is None else max(0.0, min(1.0, t.util / 100.0))
        mem = None if t.mem is None else max(0.0, min(1.0, t.mem / 100.0))
        self._bar(p, QRectF(x, by, util_w, bar_h), util, BAR_COLORS[0], track, text,
                  "—" if t.util is None else f"{t.util:.0f}%")
        x += util_w + 6
        self._bar(p, QRectF(x, by, mem_w, bar_h), mem, BAR_COLORS[1], track, text, fmt_memory(t))
        x += mem_w + 8
        if extras_w:
            p.setPen(text)
            p.drawText(QRectF(x, rect.y(), extras_w, rect.height()), right, fmt_extras(t))
            x += extras_w + 6
        if spark_w:
            sr = QRectF(x, by, spark_w, bar_h)
            p.fillRect(sr, track)
            self._paint_spark(p, sr.adjusted(1, 2, -1, -2), t.spark)

    @staticmethod
    def _bar(p: QPainter, r: QRectF, frac: float | None, color: QColor, track: QColor,
             text: QColor, label: str) -> None:
        """A rounded track, a soft fill of `frac`, and the value written over it."""
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(track)
        p.drawRoundedRect(r, 3, 3)
        if frac:
            fill = QColor(color)
            fill.setAlpha(110)
            p.setBrush(fill)
            p.drawRoundedRect(QRectF(r.x(), r.y(), max(4.0, r.width() * frac), r.height()), 3, 3)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(text)
        p.drawText(r.adjusted(6, 0, -4, 0), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   label)

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
            return QSize(MIN_LINE_W + 2 * PAD, row_height(n))
        return super().sizeHint(option, index)
