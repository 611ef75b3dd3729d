"""Tokens per hour as stacked bars, drawn with QPainter (no pyqtgraph: the view is built at
start-up). One bar per hour; each series (a key or a model) is one colour, largest at the
bottom; a legend names the first series and the rest are summed as "other". The legend
wraps onto as many rows as the width needs (the chart grows by those rows, a name too long
for a row is elided); hovering a legend entry or a bar gives the full names and values."""

from __future__ import annotations

from datetime import datetime, timezone

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

SERIES_COLOURS = ("#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#dc2626", "#ca8a04", "#4b5563")
MAX_SERIES = len(SERIES_COLOURS) - 1   # the last colour is "other"
MIN_PLOT_H = 180                       # the chart's height with a one-row legend
SWATCH, GAP, LABEL_MAX = 10, 14, 200   # legend: swatch, space after it and between entries, label width


def _short(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{suffix}".replace(".0", "")
    return f"{n:.0f}"


class StackedBars(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.hours: list[int] = []
        self.series: list[tuple[str, list[int]]] = []
        self.setMinimumHeight(MIN_PLOT_H)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)

    def set_data(self, hours: list[int], series: dict[str, list[int]]) -> None:
        """`series` in the order to stack (largest first); beyond MAX_SERIES they become "other"."""
        items = list(series.items())
        if len(items) > MAX_SERIES:
            rest = [sum(v) for v in zip(*(s for _n, s in items[MAX_SERIES:]))]
            items = items[:MAX_SERIES] + [("other", rest)]
        self.hours, self.series = list(hours), items
        self._fit_legend()
        self.update()

    def column_totals(self) -> list[int]:
        return [sum(s[i] for _n, s in self.series) for i in range(len(self.hours))]

    # -- geometry -----------------------------------------------------------------------------
    def _axis_w(self) -> int:
        return self.fontMetrics().horizontalAdvance("000.0M") + 8

    def legend(self, width: int | None = None) -> list[tuple[str, str, QRectF]]:
        """(name, label shown, the entry's rect) for every series, wrapped to `width`."""
        fm = self.fontMetrics()
        w = self.width() if width is None else width
        x0, line = self._axis_w(), fm.height() + 6
        room = max(40, w - x0 - 8)
        label_max = max(20, min(LABEL_MAX, room - SWATCH - 4))
        out, x, y = [], x0, 6
        for name, _s in self.series:
            label = fm.elidedText(name, Qt.TextElideMode.ElideMiddle, label_max)
            entry_w = SWATCH + 4 + fm.horizontalAdvance(label)
            if x > x0 and x + entry_w > x0 + room:
                x, y = x0, y + line
            out.append((name, label, QRectF(x, y, entry_w, fm.height())))
            x += entry_w + GAP
        return out

    def legend_height(self, width: int | None = None) -> int:
        entries = self.legend(width)
        return int(entries[-1][2].bottom()) + 4 if entries else self.fontMetrics().height() + 10

    def _fit_legend(self) -> None:
        """The plot keeps its height however many rows the legend takes."""
        extra = max(0, self.legend_height() - (self.fontMetrics().height() + 10))
        if self.minimumHeight() != MIN_PLOT_H + extra:
            self.setMinimumHeight(MIN_PLOT_H + extra)

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802
        super().resizeEvent(event)
        self._fit_legend()

    def plot_rect(self) -> QRectF:
        fm = self.fontMetrics()
        left, bottom, top = self._axis_w(), fm.height() + 6, self.legend_height() + 4
        return QRectF(left, top, max(10, self.width() - left - 8), max(10, self.height() - top - bottom))

    def tip_at(self, pos: QPointF) -> str:
        """The tooltip at `pos`: a legend entry's full name and total, or a bar's hour and values."""
        for name, _label, rect in self.legend():
            if rect.adjusted(-2, -2, 2, 2).contains(pos):
                total = next(sum(s) for n, s in self.series if n == name)
                return f"{name}: {total:,} tokens"
        plot = self.plot_rect()
        if not self.hours or not plot.contains(pos):
            return ""
        i = min(len(self.hours) - 1, int((pos.x() - plot.left()) / (plot.width() / len(self.hours))))
        hour = datetime.fromtimestamp(self.hours[i] / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:00 UTC")
        lines = [f"{name}: {s[i]:,}" for name, s in self.series if s[i]]
        return "\n".join([hour, *(lines or ["no tokens"])])

    def event(self, e: QEvent) -> bool:
        if e.type() == QEvent.Type.ToolTip:
            tip = self.tip_at(QPointF(e.pos()))
            if tip:
                QToolTip.showText(e.globalPos(), tip, self)
            else:
                QToolTip.hideText()
                e.ignore()
            return True
        return super().event(e)

    def paintEvent(self, _event) -> None:  # noqa: ANN001, N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        pal = self.palette()
        fg, muted = pal.color(QPalette.ColorRole.WindowText), pal.color(QPalette.ColorRole.PlaceholderText)
        fm = p.fontMetrics()
        h = self.height()
        plot = self.plot_rect()
        left = plot.left()
        totals = self.column_totals()
        peak = max(totals, default=0)
        # legend
        for i, (_name, label, rect) in enumerate(self.legend()):
            p.fillRect(QRectF(rect.left(), rect.top() + (rect.height() - SWATCH) / 2, SWATCH, SWATCH),
                       QColor(SERIES_COLOURS[min(i, MAX_SERIES)]))
            p.setPen(fg)
            p.drawText(int(rect.left() + SWATCH + 4), int(rect.top() + fm.ascent()), label)
        # axes
        p.setPen(muted)
        p.drawLine(plot.bottomLeft(), plot.bottomRight())
        if not self.hours or peak == 0:
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "No usage in this range")
            return
        for frac in (0.5, 1.0):
            y = plot.bottom() - frac * plot.height()
            p.drawText(QRectF(0, y - fm.height() / 2, left - 6, fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, _short(peak * frac))
            p.drawLine(int(plot.left()), int(y), int(plot.right()), int(y))
        n = len(self.hours)
        slot = plot.width() / n
        bar = max(1.0, slot * 0.8)
        for i in range(n):
            y = plot.bottom()
            for k, (_name, s) in enumerate(self.series):
                if not s[i]:
                    continue
                hh = s[i] / peak * plot.height()
                p.fillRect(QRectF(plot.left() + i * slot + (slot - bar) / 2, y - hh, bar, hh),
                           QColor(SERIES_COLOURS[min(k, MAX_SERIES)]))
                y -= hh
        # time labels: about one per 90 px
        step = max(1, int(90 / max(slot, 1e-6)))
        p.setPen(muted)
        fmt = "%H:%M" if n <= 48 else "%m-%d"
        for i in range(0, n, step):
            t = datetime.fromtimestamp(self.hours[i] / 1000, tz=timezone.utc).strftime(fmt)
            p.drawText(int(plot.left() + i * slot), int(h - 4), t)
