"""Fleet view: every node at a glance, with a summary bar, search and a state filter.

One QTimer (8 ticks a second) flushes an eighth of the on-screen rows that have new data
(rows off screen are not touched until they scroll into view) and refreshes the summary
once a second: every row shows a new sample within a second, and no single event repaints
the table.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFrame, QHBoxLayout, QHeaderView,
                               QLabel, QLineEdit, QStackedWidget, QTableView, QVBoxLayout,
                               QWidget)

from ...core.nodes import ConnectionState
from ..fleet_state import FleetState
from ..models.fleet_model import (COL_BACKEND, COL_DEVICES, COL_MODELS, COL_NODE, COL_QUEUE,
                                  COL_SEEN, COL_STATE, COL_TPS, NODE_ID_ROLE, SORT_ROLE,
                                  STATE_ROLE, FleetModel)
from .fleet_delegate import BAR_COLORS, FleetDelegate, row_height

STATE_FILTERS = (("All states", None), ("Online", ConnectionState.ONLINE),
                 ("Degraded", ConnectionState.DEGRADED), ("Connecting", ConnectionState.CONNECTING),
                 ("Offline", ConnectionState.OFFLINE), ("Unauthorized", ConnectionState.UNAUTHORIZED))


class FleetFilter(QSortFilterProxyModel):
    """Search text over node, state, backend and models; plus a state filter."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.state_filter: ConnectionState | None = None
        self.text = ""
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(False)  # re-sorting 200 rows per update would jitter

    def set_text(self, text: str) -> None:
        self._refilter(lambda: setattr(self, "text", text.strip().lower()))

    def set_state(self, state: ConnectionState | None) -> None:
        self._refilter(lambda: setattr(self, "state_filter", state))

    def _refilter(self, change) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter is deprecated
            self.beginFilterChange()
            change()
            self.endFilterChange()
        else:
            change()
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent) -> bool:
        m = self.sourceModel()
        if self.state_filter is not None and \
                m.index(row, COL_STATE, parent).data(STATE_ROLE) is not self.state_filter:
            return False
        if not self.text:
            return True
        hay = " ".join(str(m.index(row, c, parent).data() or "")
                       for c in (COL_NODE, COL_STATE, COL_BACKEND, COL_MODELS)).lower()
        return all(word in hay for word in self.text.split())


class SummaryBar(QFrame):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("summaryBar")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 8, 12, 8)
        lay.setSpacing(28)
        self.cards: dict[str, QLabel] = {}
        for key, title in (("online", "Nodes online"), ("gpus", "GPUs"),
                           ("tokens_per_second", "Fleet tokens/s"), ("alerts", "Open alerts")):
            box = QVBoxLayout()
            box.setSpacing(0)
            value = QLabel("0")
            value.setObjectName("summaryValue")
            caption = QLabel(title)
            caption.setObjectName("summaryCaption")
            box.addWidget(value)
            box.addWidget(caption)
            lay.addLayout(box)
            self.cards[key] = value
        lay.addStretch(1)

    def update_from(self, summary: dict[str, float]) -> None:
        self.cards["online"].setText(f"{summary['online']:.0f} / {summary['nodes']:.0f}")
        self.cards["gpus"].setText(f"{summary['gpus']:.0f}")
        self.cards["tokens_per_second"].setText(f"{summary['tokens_per_second']:,.0f}")
        alerts = int(summary["alerts"])
        card = self.cards["alerts"]
        card.setText(str(alerts))
        if card.property("alert") != (alerts > 0):   # re-polishing a styled label is slow
            card.setProperty("alert", alerts > 0)
            card.style().unpolish(card)
            card.style().polish(card)


class FleetView(QWidget):
    node_activated = Signal(str)       # double-click: open the node view
    add_connection_requested = Signal()

    TICKS_PER_SECOND = 8
    MIN_ROW_H = 52   # two text lines (address + hostname, state + error)

    def __init__(self, state: FleetState, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.model = FleetModel(state, self)
        self.proxy = FleetFilter(self)
        self.proxy.setSourceModel(self.model)

        self.summary = SummaryBar(self)
        self.search = QLineEdit(placeholderText="Search nodes, backends, models…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.proxy.set_text)
        self.state_combo = QComboBox()
        for label, _ in STATE_FILTERS:
            self.state_combo.addItem(label)
        self.state_combo.currentIndexChanged.connect(
            lambda i: self.proxy.set_state(STATE_FILTERS[i][1]))

        self.table = QTableView()
        self.table.setObjectName("fleetTable")
        self.table.setModel(self.proxy)
        self.delegate = FleetDelegate(self.table)
        self.table.setItemDelegate(self.delegate)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL_NODE, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(True)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.MIN_ROW_H)
        hh = self.table.horizontalHeader()
        hh.setHighlightSections(False)
        hh.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        for col, width in ((COL_NODE, 140), (COL_STATE, 120), (COL_BACKEND, 72),
                           (COL_MODELS, 110), (COL_QUEUE, 88), (COL_TPS, 80), (COL_SEEN, 84)):
            # never narrower than the bold header text plus the sort arrow
            hh.resizeSection(col, max(width, hh.sectionSizeHint(col)))
        # Devices takes what the others leave, but never less than DEVICES_MIN_W: in a
        # narrow window the table scrolls sideways instead of squeezing the device bars.
        hh.setSectionResizeMode(COL_DEVICES, QHeaderView.ResizeMode.Fixed)
        hh.setMinimumSectionSize(60)
        self.table.viewport().installEventFilter(self)
        hh.sectionResized.connect(lambda *_a: self._fit_rows(force=True))
        hh.sectionResized.connect(
            lambda col, *_a: col == COL_DEVICES or self._fit_devices_column(self.table.viewport().width()))
        self.table.doubleClicked.connect(self._activated)
        legend = QLabel("Devices: " + "  ".join(
            f"<span style='color:{c.name()}'>&#9632;</span> {n}"
            for c, n in zip(BAR_COLORS[:2], ("utilisation", "memory used / total")))
            + " &nbsp;·&nbsp; °C, W where reported &nbsp;·&nbsp; line: utilisation, last 60 s")
        legend.setObjectName("summaryCaption")
        legend.setWordWrap(True)   # two lines in a narrow window, never a wider view
        legend.setMinimumWidth(200)
        self.search.setMaximumWidth(320)

        self.empty = QLabel("No nodes yet.\nAdd a connection (Ctrl+N) or start the console "
                            "with --connect HOST:PORT.")
        self.empty.setObjectName("emptyState")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)

        bar = QHBoxLayout()
        bar.addWidget(self.search, 1)
        bar.addWidget(self.state_combo)
        bar.addSpacing(12)
        bar.addWidget(legend, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 12, 16, 12)
        lay.setSpacing(10)
        lay.addWidget(self.summary)
        lay.addLayout(bar)
        lay.addWidget(self.stack, 1)

        self._max_devices = 1
        self.timer = QTimer(self)
        self._ticks = 0
        self.timer.setInterval(1000 // self.TICKS_PER_SECOND)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        state.node_added.connect(lambda _nid: self._structure_changed())
        state.node_removed.connect(lambda _nid: self._structure_changed())
        self._structure_changed()

    DEVICES_MIN_W = 220

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.Resize and watched is self.table.viewport():
            self._fit_devices_column(event.size().width())
        return False

    def _fit_devices_column(self, viewport_w: int) -> None:
        hh = self.table.horizontalHeader()
        others = sum(hh.sectionSize(c) for c in range(hh.count()) if c != COL_DEVICES)
        width = max(self.DEVICES_MIN_W, viewport_w - others)
        if hh.sectionSize(COL_DEVICES) != width:
            hh.resizeSection(COL_DEVICES, width)

    def _structure_changed(self) -> None:
        self.summary.update_from(self.state.summary())
        self.stack.setCurrentIndex(1 if self.model.rowCount() else 0)
        self._fit_rows()

    def refresh(self) -> None:
        """Timer tick: repaints a share of the on-screen rows that have new data, so every
        row is refreshed within a second but no single event repaints them all."""
        visible = self._visible_source_rows()
        share = max(1, -(-len(visible) // self.TICKS_PER_SECOND))  # ceil
        self.model.flush(limit_to=visible, budget=share)
        self._ticks += 1
        if self._ticks % self.TICKS_PER_SECOND == 0:
            self._structure_changed()

    def _visible_source_rows(self) -> set[int]:
        if not self.table.isVisible():
            return set()
        vp = self.table.viewport()
        first = self.table.rowAt(0)
        last = self.table.rowAt(vp.height() - 1)
        if first < 0:
            return set()
        if last < 0:
            last = self.proxy.rowCount() - 1
        return {self.proxy.mapToSource(self.proxy.index(r, 0)).row()
                for r in range(first, last + 1)}

    def _fit_rows(self, force: bool = False) -> None:
        devices = max((len(s.info.devices) for s in self.state.statuses.values() if s.info),
                      default=1)
        if devices != self._max_devices or force:
            self._max_devices = devices
            self.table.verticalHeader().setDefaultSectionSize(
                max(self.MIN_ROW_H, row_height(devices, self.table.columnWidth(COL_DEVICES))))

    def resort(self) -> None:
        self.proxy.invalidate()

    def stop(self) -> None:
        self.timer.stop()

    def selected_node(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(NODE_ID_ROLE) if rows else None

    def _activated(self, index) -> None:
        nid = index.data(NODE_ID_ROLE)
        if nid:
            self.node_activated.emit(nid)
