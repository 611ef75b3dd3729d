"""Tokens per hour as stacked bars, drawn with QPainter (no pyqtgraph: the view is built at
start-up). One bar per hour; each series (a key or a model) is one colour, largest at the
bottom; a legend names the first series and the rest are summed as "other"."""

from __future__ import annotations

from datetime import datetime, timezone

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

SERIES_COLOURS = ("#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#dc2626", "#ca8a04", "#4b5563")
MAX_SERIES = len(SERIES_COLOURS) - 1   # the last colour is "other"


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
        self.setMinimumHeight(180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_data(self, hours: list[int], series: dict[str, list[int]]) -> None:
        """`series` in the order to stack (largest first); beyond MAX_SERIES they become "other"."""
        items = list(series.items())
        if len(items) > MAX_SERIES:
            rest = [sum(v) for v in zip(*(s for _n, s in items[MAX_SERIES:]))]
            items = items[:MAX_SERIES] + [("other", rest)]
        self.hours, self.series = list(hours), items
        self.update()

    def column_totals(self) -> list[int]:
        return [sum(s[i] for _n, s in self.series) for i in range(len(self.hours))]

    def paintEvent(self, _event) -> None:  # noqa: ANN001, N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        pal = self.palette()
        fg, muted = pal.color(QPalette.ColorRole.WindowText), pal.color(QPalette.ColorRole.PlaceholderText)
        fm = p.fontMetrics()
        w, h = self.width(), self.height()
        legend_h = fm.height() + 8
        left, bottom, top = fm.horizontalAdvance("000.0M") + 8, fm.height() + 6, legend_h + 4
        plot = QRectF(left, top, max(10, w - left - 8), max(10, h - top - bottom))
        totals = self.column_totals()
        peak = max(totals, default=0)
        # legend
        x = left
        for i, (name, _s) in enumerate(self.series):
            p.fillRect(QRectF(x, 6, 10, 10), QColor(SERIES_COLOURS[min(i, MAX_SERIES)]))
            p.setPen(fg)
            label = fm.elidedText(name, Qt.TextElideMode.ElideMiddle, 160)
            p.drawText(int(x + 14), 6 + fm.ascent() - 1, label)
            x += 14 + fm.horizontalAdvance(label) + 14
            if x > w - 60:
                break
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
