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
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPainterPath, QPen, QPixmap
from pyqtgraph import arrayToQPath
from PySide6.QtWidgets import QStyle, QStyledItemDelegate

from ..models.fleet_model import (COL_DEVICES, DEVICES_ROLE, NODE_ID_ROLE, STAMP_ROLE, DeviceTile,
                                  fmt_extras, fmt_memory)

LINE_H, GAP, PAD = 20, 3, 6
UNHEALTHY = QColor("#d0473c")
MIN_LINE_W, MAX_LINE_W = 300, 560      # a column of lines needs at least / uses at most this
SPARK_W = 56                           # sparkline width at the minimum line width
BAR_COLORS = (QColor("#3b82f6"), QColor("#8b5cf6"), QColor("#f59e0b"), QColor("#ef4444"))


def columns_for(width: int, devices: int) -> int:
    return max(1, min(max(1, devices), (width - PAD) // (MIN_LINE_W + PAD)))


def row_height(max_devices: int, width: int = 10_000) -> int:
    lines = math.ceil(max(1, max_devices) / columns_for(width, max_devices))
    return lines * LINE_H + (lines - 1) * GAP + 2 * PAD


class FleetDelegate(QStyledItemDelegate):
    """Device lines are rendered once per new sample into a cached pixmap per row; every
    other repaint (scrolling, hover, the other columns changing) just blits it."""

    CACHE_LIMIT = 512

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._cache: dict[str, tuple[tuple, QPixmap]] = {}
        self._style_key: tuple | None = None
        self._style_val: tuple = ()

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

    def _style(self, option) -> tuple:
        """Font, metrics and colours for one font/palette, built once (not per render)."""
        text = option.palette.text().color()
        key = (option.font.key(), text.rgba())
        if self._style_key != key:
            font = QFont(option.font)
            font.setPointSizeF(max(7.5, font.pointSizeF() * 0.88))
            fm = QFontMetrics(font)
            track = QColor(text)
            track.setAlpha(22)
            muted = QColor(text)
            muted.setAlpha(150)
            fills = []
            for c in BAR_COLORS[:2]:
                fill = QColor(c)
                fill.setAlpha(110)
                fills.append(fill)
            spark_pen = QPen(BAR_COLORS[0])
            spark_pen.setWidthF(1.2)
            self._style_key = key
            self._style_val = (font, fm, text, muted, track, fills, spark_pen,
                               fm.horizontalAdvance("#00") + 6)
        return self._style_val

    def _paint_tiles(self, painter: QPainter, option, tiles, width: int, height: int,
                     selected: bool) -> None:
        """Draws every line of one row in batches (all tracks, then fills, then texts, then
        one path for all sparklines): a few dozen Qt calls per row instead of hundreds."""
        if selected:
            painter.fillRect(0, 0, width, height, option.palette.highlight())
        font, fm, text, muted, track, fills, spark_pen, idx_w = self._style(option)
        painter.setFont(font)
        cols = columns_for(width, len(tiles))
        lines = math.ceil(len(tiles) / cols)
        col_w = min(MAX_LINE_W, (width - PAD * (cols + 1)) / cols)
        used_h = lines * LINE_H + (lines - 1) * GAP
        top = max(PAD // 2, (height - used_h) / 2)
        extras = [fmt_extras(t) for t in tiles]
        extras_w = max((fm.horizontalAdvance(e) for e in extras if e), default=0)
        spark_w = 0
        if col_w - idx_w - extras_w >= 260:
            spark_w = max(SPARK_W, int(col_w * 0.2))
        tail = (extras_w + 8 if extras_w else 0) + (spark_w + 6 if spark_w else 0)
        avail = col_w - idx_w - tail
        util_w = max(40.0, avail * 0.42)
        mem_w = max(40.0, avail - util_w - 6)
        bar_h = LINE_H - 4
        tracks, util_fills, mem_fills, spark_rects = [], [], [], []
        idx_texts, labels, extra_texts = [], [], []
        for i, t in enumerate(tiles):
            col, line = divmod(i, lines)       # fill column by column: #0 #1 under each other
            x = PAD + col * (col_w + PAD)
            y = top + line * (LINE_H + GAP)
            idx_texts.append((QRectF(x, y, idx_w, LINE_H), f"#{t.index}", t.health_reason is not None))
            x += idx_w
            by = y + 2
            for w, frac, out, label in (
                    (util_w, t.util, util_fills, "—" if t.util is None else f"{t.util:.0f}%"),
                    (mem_w, t.mem, mem_fills, fmt_memory(t))):
                r = QRectF(x, by, w, bar_h)
                tracks.append(r)
                if frac:
                    f = max(0.0, min(1.0, frac / 100.0))
                    if f:
                        out.append(QRectF(x, by, max(4.0, w * f), bar_h))
                labels.append((r.adjusted(6, 0, -4, 0), label))
                x += w + 6
            x += 2
            if extras_w:
                extra_texts.append((QRectF(x, y, extras_w, LINE_H), extras[i]))
                x += extras_w + 6
            if spark_w:
                spark_rects.append((QRectF(x, by, spark_w, bar_h), t.spark))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(track)
        for r in tracks:
            painter.drawRoundedRect(r, 3, 3)
        for brush, rects in zip(fills, (util_fills, mem_fills)):
            painter.setBrush(brush)
            for r in rects:
                painter.drawRoundedRect(r, 3, 3)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for r, s, unhealthy in idx_texts:   # an unhealthy device's number and extras in red
            painter.setPen(UNHEALTHY if unhealthy else muted)
            painter.drawText(r, left, s)
        painter.setPen(text)
        for r, s in labels:
            painter.drawText(r, left, s)
        for r, s in extra_texts:
            painter.setPen(UNHEALTHY if s.startswith("unhealthy") else text)
            painter.drawText(r, right, s)
        if spark_rects:
            for r, _v in spark_rects:
                painter.fillRect(r, track)
            painter.setPen(spark_pen)  # no antialiasing: 16 px tall, and it is cheaper
            painter.drawPath(_spark_path([(r.adjusted(1, 2, -1, -2), v) for r, v in spark_rects]))

    def sizeHint(self, option, index) -> QSize:
        if index.column() == COL_DEVICES:
            n = len(index.data(DEVICES_ROLE) or ())
            return QSize(MIN_LINE_W + 2 * PAD, row_height(n))
        return super().sizeHint(option, index)


def _spark_path(sparks: list[tuple[QRectF, np.ndarray]]) -> QPainterPath:
    """One path for every sparkline of a row, built from numpy arrays in a single call;
    NaN samples (gaps) break the line."""
    xs, ys, conn = [], [], []
    for rect, values in sparks:
        n = len(values)
        if n < 2:
            continue
        v = np.asarray(values, dtype=float)
        xs.append(rect.x() + np.arange(n) * (rect.width() / (n - 1)))
        ys.append(rect.bottom() - rect.height() * np.clip(v, 0.0, 100.0) / 100.0)
        ok = np.isfinite(v)
        c = ok[:-1] & ok[1:]           # segment i joins point i and i + 1
        conn.append(np.concatenate((c, [False])))   # never join one device's line to the next
    if not xs:
        return QPainterPath()
    x, y, c = np.concatenate(xs), np.concatenate(ys), np.concatenate(conn)
    y = np.where(np.isfinite(y), y, 0.0)
    return arrayToQPath(x, y, connect=c.astype(np.int32))
