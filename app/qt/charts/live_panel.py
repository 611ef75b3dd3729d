"""Live pyqtgraph charts of one node's history, redrawn by one QTimer.

Every plot shares the time axis. The timer slides the visible window and hands each visible
curve the ring buffer's contiguous view of that window with `setData` (width-1 pens, no
antialiasing, skipFiniteCheck, auto-range off, clip-to-view and peak downsampling), so a
redraw allocates little and costs the same whether data arrives at 1 Hz or in a backfill.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QGraphicsItem, QGraphicsSimpleTextItem, QSizePolicy

from ...core.ring import NodeHistory

PALETTE = ("#3b82f6", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899",
           "#84cc16", "#f97316", "#64748b")
LEGEND_COLUMNS = 4        # device legends: up to four entries a row
# Percentiles of one model: one hue, told apart by dash, width and shade (and the legend).
PERCENTILE_STYLES = {"p50": (Qt.PenStyle.SolidLine, 2, 100), "p95": (Qt.PenStyle.DashLine, 1, 130),
                     "p99": (Qt.PenStyle.DotLine, 1, 160)}   # (dash, width, QColor.lighter %)
PERCENT_TICKS = [[(v, str(v)) for v in (0, 25, 50, 75, 100)]]


class ValueAxis(pg.AxisItem):
    """The value axis: labels at the very ends (0, 100) are drawn, not dropped for sticking
    out of the axis by half a text line."""

    def boundingRect(self):
        return super().boundingRect().adjusted(0, -10, 0, 10)


class CountAxis(ValueAxis):
    """A value axis for counts (requests): whole numbers only, never 0.2 requests."""

    def tickValues(self, minVal, maxVal, size):
        out = []
        for spacing, values in super().tickValues(minVal, maxVal, size):
            if spacing >= 1 or not out:
                out.append((max(1.0, spacing), [v for v in values if abs(v - round(v)) < 1e-9]))
        return out

    def tickStrings(self, values, scale, spacing):
        return [str(int(round(v * scale))) for v in values]


@dataclass(frozen=True)
class ChartSpec:
    key: str
    title: str
    unit: str
    fixed_max: float | None = None   # e.g. 100 for percentages; None = follow the data
    counts: bool = False             # whole numbers on the value axis


DEVICE_CHARTS = (
    ChartSpec("util", "Utilisation", "%", 100.0),
    ChartSpec("mem", "Memory", "%", 100.0),
    ChartSpec("temp", "Temperature", "°C"),
    ChartSpec("power", "Power", "W"),
)
DEVICE_KEYS = frozenset(c.key for c in DEVICE_CHARTS)
NOTE_TEXT = {"not reported": "Not reported by this device",
             "no data": "No data in this window"}
MODEL_CHARTS = (
    ChartSpec("ttft", "Time to first token", "ms"),
    ChartSpec("itl", "Inter-token latency", "ms"),
    ChartSpec("tokens_per_s", "Generated tokens/s", "tok/s"),
    ChartSpec("queue", "Running / waiting", "requests", counts=True),
)


class _Curve:
    """One curve and where its data comes from."""

    __slots__ = ("item", "source", "label")

    def __init__(self, item: pg.PlotDataItem, source: Callable[[], tuple[np.ndarray, np.ndarray]],
                 label: str) -> None:
        self.item = item
        self.source = source
        self.label = label


class LivePanel(pg.GraphicsLayoutWidget):
    """A grid of time-series plots fed from one NodeHistory."""

    PLOTS_PER_TICK = 1

    readout = Signal(str)   # hover read-out text
    frame_drawn = Signal()  # one per redraw (the benchmark counts these)

    def __init__(self, parent=None, columns: int = 4, interval_ms: int = 100) -> None:
        super().__init__(parent)
        self.setAntialiasing(False)
        self.ci.setSpacing(6)
        self.history: NodeHistory | None = None
        self.window_s = 300.0
        self.paused = False
        self.frames = 0
        self._frozen_now = 0.0
        self._columns = columns
        self._plots: dict[str, pg.PlotItem] = {}
        self._specs: dict[str, ChartSpec] = {}
        self._curves: dict[str, list[_Curve]] = {}
        self._known_devices: tuple[int, ...] = ()
        self._known_models: tuple[str, ...] = ()
        self._cursor: dict[str, pg.InfiniteLine] = {}
        self._ymax: dict[str, float] = {}
        self._xrange: dict[str, tuple[float, float]] = {}
        self._notes: dict[str, str] = {}
        self._blank: dict[str, QGraphicsSimpleTextItem] = {}
        self._title_color = "#475569"
        self._drawn: tuple = ()
        self._pending: set[str] = set()
        self._turn = 0
        self._now = 0.0
        self._auto_columns = True   # built: from now on the width decides (resizeEvent)
        for spec in DEVICE_CHARTS + MODEL_CHARTS:
            self._add_plot(spec)
        self._grid()
        self.scene().sigMouseMoved.connect(self._on_mouse)
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.redraw)

    # --- the grid: four columns in a wide window, two (taller, scrolled) in a narrow one ------

    MIN_PLOT_W = 230    # narrower than this, a plot's legend and time labels do not fit
    MIN_PLOT_H = 190    # the height a plot keeps when the grid has more rows than fit

    def columns(self) -> int:
        return self._columns

    def _set_columns(self, columns: int) -> None:
        columns = max(1, min(columns, len(self._plots)))
        if columns != self._columns:
            self._columns = columns
            self._grid()
            self._align_legends()

    def _grid(self) -> None:
        """Places every plot in a grid of self._columns columns; only the bottom row shows
        time labels (one time axis per column is enough: the same window everywhere)."""
        keys = list(self._plots)
        for plot in self._plots.values():
            if plot in self.ci.items:
                self.ci.removeItem(plot)
        rows = (len(keys) + self._columns - 1) // self._columns
        for i, key in enumerate(keys):
            plot = self._plots[key]
            row, col = divmod(i, self._columns)
            self.ci.addItem(plot, row=row, col=col)
            last = i + self._columns >= len(keys)   # nothing below it
            plot.getAxis("bottom").setStyle(showValues=last)
        self.setMinimumHeight(rows * self.MIN_PLOT_H if self._columns < 4 else 0)

    def resizeEvent(self, event) -> None:
        # (pyqtgraph calls this with None from its constructor, before our attributes exist)
        if event is not None and getattr(self, "_auto_columns", False):
            fit = max(1, event.size().width() // self.MIN_PLOT_W)
            self._set_columns(4 if fit >= 4 else 2 if fit >= 2 else 1)
        super().resizeEvent(event)

    def _add_plot(self, spec: ChartSpec) -> None:
        axes = {"bottom": pg.DateAxisItem(orientation="bottom")}
        axes["left"] = (CountAxis if spec.counts else ValueAxis)(orientation="left")
        plot = pg.PlotItem(axisItems=axes)
        if spec.fixed_max == 100.0:   # a percentage: 0 and 100 always labelled
            plot.getAxis("left").setTicks(PERCENT_TICKS)
        plot.setTitle(f"{spec.title} <span style='font-size:8pt'>({spec.unit})</span>",
                      size="9pt", color=self._title_color)
        plot.setMenuEnabled(False)
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.disableAutoRange()
        plot.setClipToView(True)
        plot.setDownsampling(auto=True, mode="peak")
        plot.showGrid(x=True, y=True, alpha=0.15)
        plot.getAxis("left").setWidth(44)
        for name in ("left", "bottom"):  # axes repaint from a pixmap unless their range moved
            plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        plot.setYRange(0, spec.fixed_max or 1.0, padding=0.02)
        # The legend sits above the plot area (in the layout row of the hidden top axis), not
        # on it: a curve near the top of the range (utilisation at 100 %) never runs under it.
        legend = pg.LegendItem(offset=None, labelTextSize="7pt", verSpacing=-6, frame=False)
        plot.layout.removeItem(plot.getAxis("top"))   # hidden, never shown
        legend.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        plot.layout.addItem(legend, 1, 0, 1, 2)   # over the value axis and the plot area
        plot.layout.setAlignment(legend, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        plot.legend = legend
        line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#888888", width=1))
        line.hide()
        plot.addItem(line, ignoreBounds=True)
        self._cursor[spec.key] = line
        # Shown instead of empty axes when no device reports this field (e.g. power on a CPU).
        blank = QGraphicsSimpleTextItem("Not reported by this device", plot.vb)
        font = QFont()
        font.setPointSizeF(9.0)
        blank.setFont(font)
        blank.setBrush(QColor(self._title_color))
        blank.setZValue(10)
        blank.hide()
        plot.vb.sigResized.connect(lambda _vb, b=blank, v=plot.vb: _centre(b, v))
        self._blank[spec.key] = blank
        self._plots[spec.key] = plot
        self._specs[spec.key] = spec
        self._curves[spec.key] = []

    def set_theme(self, background: str, foreground: str) -> None:
        self.setBackground(background)
        for plot in self._plots.values():
            for name in ("left", "bottom"):
                ax = plot.getAxis(name)
                ax.setPen(pg.mkPen(foreground))
                ax.setTextPen(pg.mkPen(foreground))
            plot.titleLabel.setText(plot.titleLabel.text, color=foreground)
        for blank in self._blank.values():
            blank.setBrush(QColor(foreground))
        self._title_color = foreground

    # --- configuration ---------------------------------------------------------------------

    def set_history(self, history: NodeHistory | None) -> None:
        self.history = history
        for key, curves in self._curves.items():
            plot = self._plots[key]
            for c in curves:
                plot.removeItem(c.item)
            curves.clear()
            if plot.legend is not None:
                plot.legend.clear()
        self._known_devices = ()
        self._known_models = ()
        self._ymax.clear()
        self._xrange.clear()
        self._notes.clear()
        self.redraw(force=True)

    def set_window(self, seconds: float) -> None:
        self.window_s = float(seconds)
        self.redraw(force=True)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._frozen_now = time.time()
        if not paused:
            self.redraw(force=True)

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _curve(self, key: str, label: str, color: str, style: Qt.PenStyle,
               source: Callable[[], tuple[np.ndarray, np.ndarray]], width: int = 1,
               lighter: int = 100) -> None:
        pen = pg.mkPen(QColor(color).lighter(lighter), width=width, style=style)
        item = pg.PlotDataItem(pen=pen, antialias=False, skipFiniteCheck=True, connect="finite",
                               name=label)
        self._plots[key].addItem(item)
        self._curves[key].append(_Curve(item, source, label))

    def _sync_curves(self) -> None:
        """Adds curves for devices and models that appeared since the last redraw."""
        h = self.history
        if h is None:
            return
        devices = tuple(sorted(h.devices))
        models = tuple(sorted(h.models))
        if devices == self._known_devices and models == self._known_models:
            return
        if devices != self._known_devices:
            for spec in DEVICE_CHARTS:   # "#0 #1 #2 #3" side by side: a short legend
                self._plots[spec.key].legend.setColumnCount(
                    max(1, min(LEGEND_COLUMNS, len(devices))))
            for idx in devices:
                if idx in self._known_devices:
                    continue
                color = PALETTE[idx % len(PALETTE)]
                for spec in DEVICE_CHARTS:
                    self._curve(spec.key, f"#{idx}", color, Qt.PenStyle.SolidLine,
                                lambda i=idx, ch=spec.key: h.device_channel(i, ch))
            self._known_devices = devices
        if models != self._known_models:
            for n, name in enumerate(models):
                if name in self._known_models:
                    continue
                color = PALETTE[n % len(PALETTE)]
                for metric in ("ttft", "itl"):
                    for pct, (style, width, lighter) in PERCENTILE_STYLES.items():
                        self._curve(metric, f"{name} {pct}", color, style,
                                    lambda m=name, ch=f"{metric}_{pct}": h.model_channel(m, ch),
                                    width, lighter)
                self._curve("tokens_per_s", name, color, Qt.PenStyle.SolidLine,
                            lambda m=name: h.model_channel(m, "tokens_per_s"))
                self._curve("queue", f"{name} running", color, Qt.PenStyle.SolidLine,
                            lambda m=name: h.model_channel(m, "running"))
                self._curve("queue", f"{name} waiting", color, Qt.PenStyle.DashLine,
                            lambda m=name: h.model_channel(m, "waiting"))
            self._known_models = models
        self._align_legends()

    def _align_legends(self) -> None:
        """Gives the legend row of every plot in a row of the grid the height of the tallest
        legend there, so the plot areas of one row start at the same height. Only when curves
        come or go: it re-lays out the grid."""
        keys = list(self._plots)
        for start in range(0, len(keys), self._columns):
            plots = [self._plots[k] for k in keys[start:start + self._columns]]
            tallest = max(p.legend.effectiveSizeHint(Qt.SizeHint.PreferredSize).height()
                          for p in plots)
            for p in plots:
                p.layout.setRowFixedHeight(1, tallest)

    # --- drawing ---------------------------------------------------------------------------

    def redraw(self, force: bool = False) -> None:
        """Brings the plots up to date with the history (called by the timer).

        The time axis ends at the newest sample, so between samples nothing moves and
        nothing is repainted. When a sample arrives the plots are updated a few per tick
        (PLOTS_PER_TICK), so no single GUI event repaints the whole grid: a 1 Hz node costs
        one full refresh a second, spread over the ticks. `force` (window, pause or node
        changed: an operator's action) updates every plot at once."""
        if not force and (self.paused or not self.isVisible()):
            return
        h = self.history
        stamp = (h.last_time if h is not None else 0.0, self.window_s, self.paused)
        if force or stamp != self._drawn:
            self._drawn = stamp
            self._sync_curves()
            if self.paused:
                now = self._frozen_now
            else:
                now = h.last_time if h is not None and h.last_time else time.time()
            # The axis advances in steps of a tenth of the window, not with every sample:
            # an axis that has not moved repaints from its cache instead of re-laying ticks.
            step = self.window_s / 10.0
            self._now = math.ceil(now / step) * step
            self._pending = set(self._curves)
        if not self._pending:
            return
        # Round robin from where the last tick stopped: with samples arriving faster than a
        # full pass, every plot still gets its turn.
        order = list(self._curves)
        batch = len(order) if force else self.PLOTS_PER_TICK
        for _ in range(len(order)):
            key = order[self._turn % len(order)]
            self._turn += 1
            if key in self._pending:
                self._pending.discard(key)
                self._update_plot(key, self._now - self.window_s, self._now)
                batch -= 1
                if batch == 0:
                    break
        if not self._pending:
            self.frames += 1
            self.frame_drawn.emit()

    def _update_plot(self, key: str, x0: float, now: float) -> None:
        curves = self._curves[key]
        top = 0.0
        shown = 0
        for c in curves:
            x, y = c.source()
            i = int(np.searchsorted(x, x0)) if len(x) else 0
            xs, ys = x[i:], y[i:]
            if len(xs) == 0 or np.isnan(ys[-1]) and np.all(np.isnan(ys)):
                if c.item.xData is not None and len(c.item.xData):
                    c.item.setData([], [])
                continue
            c.item.setData(xs, ys)
            shown += 1
            m = np.nanmax(ys)
            if m > top:
                top = float(m)
        spec = self._specs[key]
        if shown:
            note = ""
        elif curves and key in DEVICE_KEYS:
            note = "not reported"        # the device has no such sensor
        else:
            note = "no data"             # nothing yet in this window (no model, no request)
        self._set_title(key, note)
        ymax = spec.fixed_max or _nice_ceiling(top)
        plot = self._plots[key]
        if self._ymax.get(key) != ymax:   # re-laying out an axis is costly: only on change
            self._ymax[key] = ymax
            plot.setYRange(0, ymax, padding=0.02)
        if self._xrange.get(key) != (x0, now):
            self._xrange[key] = (x0, now)
            plot.setXRange(x0, now, padding=0)

    def _set_title(self, key: str, note: str) -> None:
        """Title with the unit; when the field is "not reported" (a device without sensors)
        the plot hides its value axis, grid and legend and shows a centred sentence instead."""
        if self._notes.get(key) == note:
            return
        self._notes[key] = note
        spec = self._specs[key]
        plot = self._plots[key]
        plot.setTitle(f"{spec.title} <span style='font-size:8pt'>({spec.unit})</span>",
                      size="9pt", color=self._title_color)
        missing = bool(note)
        plot.getAxis("left").setStyle(showValues=not missing, tickLength=0 if missing else -5)
        plot.showGrid(x=not missing, y=not missing, alpha=0.15)
        if plot.legend is not None:
            plot.legend.setVisible(not missing)
        blank = self._blank[key]
        blank.setText(NOTE_TEXT.get(note, ""))
        blank.setVisible(missing)
        _centre(blank, plot.vb)

    def note(self, key: str) -> str:
        """The plot's note ("" or "not reported"), for tests and the read-out."""
        return self._notes.get(key, "")

    def _on_mouse(self, pos) -> None:
        for key, plot in self._plots.items():
            vb = plot.vb
            if not plot.sceneBoundingRect().contains(pos):
                self._cursor[key].hide()
                continue
            x = vb.mapSceneToView(pos).x()
            parts = [time.strftime("%H:%M:%S", time.localtime(x)), self._specs[key].title + ":"]
            for c in self._curves[key]:
                xs, ys = c.source()
                if len(xs) == 0:
                    continue
                i = min(len(xs) - 1, int(np.searchsorted(xs, x)))
                if not np.isnan(ys[i]):
                    parts.append(f"{c.label} {ys[i]:.1f}")
            self._cursor[key].setPos(x)
            self._cursor[key].show()
            self.readout.emit(f"{parts[0]}  {parts[1]} " + ", ".join(parts[2:])
                              + f" {self._specs[key].unit}")


def _centre(item: QGraphicsSimpleTextItem, vb: pg.ViewBox) -> None:
    r, b = vb.rect(), item.boundingRect()
    item.setPos(r.center().x() - b.width() / 2, r.center().y() - b.height() / 2)


def _nice_ceiling(value: float) -> float:
    """Rounds a y-axis maximum up to 1, 2 or 5 times a power of ten."""
    if not value > 0:
        return 1.0
    exp = 10 ** np.floor(np.log10(value))
    for m in (1, 2, 5, 10):
        if value <= m * exp:
            return float(m * exp)
    return float(10 * exp)
