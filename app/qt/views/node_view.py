"""Node view: one node's facts and live charts (devices and deployed models).

History is back-filled by the hub on connect, so the charts are full as soon as the view
opens. The time window (1, 5, 15, 60 min) and pause act on the LivePanel; its single timer
runs only while this view is visible.
"""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea,
                               QStackedWidget, QVBoxLayout, QWidget)

from ...core.nodes import ConnectionState
from ...core.samples import device_details
from ..charts.live_panel import LivePanel
from ..fleet_state import FleetState

WINDOWS = (("1 min", 60), ("5 min", 300), ("15 min", 900), ("60 min", 3600))


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


class NodeView(QWidget):
    def __init__(self, state: FleetState, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.node_id: str | None = None
        self._labels: dict[str, str] = {}   # picker text per node: relabel only on a change

        self.node_combo = QComboBox()
        self.node_combo.setMinimumWidth(220)
        self.node_combo.currentIndexChanged.connect(self._combo_changed)
        self.window_combo = QComboBox()
        for label, _ in WINDOWS:
            self.window_combo.addItem(label)
        self.window_combo.setCurrentIndex(1)
        self.window_combo.currentIndexChanged.connect(
            lambda i: self.panel.set_window(WINDOWS[i][1]))
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.toggled.connect(self._pause)
        self.state_label = QLabel()
        self.state_label.setObjectName("nodeState")

        self.facts = QLabel()
        self.facts.setObjectName("nodeFacts")
        self.facts.setWordWrap(True)
        self.facts.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.device_health = QLabel()   # one line; every field of every device in its tooltip
        self.device_health.setObjectName("deviceHealth")
        self.device_health.setWordWrap(True)
        self._details_of = None          # the snapshot the device text was built from
        self.readout = QLabel(" ")
        self.readout.setObjectName("readout")

        self.panel = LivePanel(self)
        self.panel.set_window(WINDOWS[1][1])
        self.panel.readout.connect(self.readout.setText)

        self.empty = QLabel("No node selected.\nDouble-click a node in the Fleet view, or pick "
                            "one above.")
        self.empty.setObjectName("emptyState")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        # In a narrow window the charts reflow to two columns and keep their height: they scroll.
        self.chart_scroll = QScrollArea()
        self.chart_scroll.setWidgetResizable(True)
        self.chart_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.chart_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.chart_scroll.setWidget(self.panel)
        self.stack.addWidget(self.chart_scroll)

        top = QHBoxLayout()
        top.addWidget(QLabel("Node"))
        top.addWidget(self.node_combo)
        top.addWidget(self.state_label)
        top.addStretch(1)
        top.addWidget(QLabel("Window"))
        top.addWidget(self.window_combo)
        top.addWidget(self.pause_button)
        info = QFrame()
        info.setObjectName("factsCard")
        il = QVBoxLayout(info)
        il.setContentsMargins(12, 8, 12, 8)
        il.addWidget(self.facts)
        il.addWidget(self.device_health)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 12, 16, 12)
        lay.setSpacing(8)
        lay.addLayout(top)
        lay.addWidget(info)
        lay.addWidget(self.readout)
        lay.addWidget(self.stack, 1)

        state.node_added.connect(self._node_added)
        state.node_removed.connect(self._node_gone)
        state.status_changed.connect(self._status_changed)
        state.data_changed.connect(self._data_changed)
        self._fill_nodes()

    # --- node selection --------------------------------------------------------------------

    def _fill_nodes(self) -> None:
        """Fills the picker from scratch: only once, when the view is built."""
        current = self.node_id
        self.node_combo.blockSignals(True)
        self.node_combo.clear()
        self._labels = {nid: self.state.statuses[nid].address.label for nid in self.state.order}
        for nid in self.state.order:
            self.node_combo.addItem(self._labels[nid], nid)
        self.node_combo.blockSignals(False)
        self._settle(current)

    # The picker follows the fleet one node at a time, like the Models and Playground
    # pickers: rebuilding every entry per joining node cost O(n) each, O(n^2) while a large
    # fleet connects (0.10 s of GUI time for 200 nodes in bench_console's connect profile,
    # 0.6 s for 1,000). Each handler ends as a refill would.
    def _node_added(self, node_id: str) -> None:
        if node_id not in self._labels and node_id in self.state.statuses:
            self._labels[node_id] = self.state.statuses[node_id].address.label
            self.node_combo.blockSignals(True)
            self.node_combo.addItem(self._labels[node_id], node_id)
            self.node_combo.blockSignals(False)
        self._settle(self.node_id)

    def _node_gone(self, node_id: str) -> None:
        self._labels.pop(node_id, None)
        i = self.node_combo.findData(node_id)
        if i >= 0:
            self.node_combo.blockSignals(True)
            self.node_combo.removeItem(i)
            self.node_combo.blockSignals(False)
        self._settle(self.node_id)

    def _settle(self, current: str | None) -> None:
        """Keeps the chosen node if it is still there, else shows the first one (or none)."""
        if current in self.state.statuses:
            if self.node_combo.currentData() != current:
                self.show_node(current)
        elif self.state.order:
            self.show_node(self.state.order[0])
        else:
            self.show_node(None)

    def _combo_changed(self, i: int) -> None:
        if i >= 0:
            self.show_node(self.node_combo.itemData(i))

    def show_node(self, node_id: str | None) -> None:
        if node_id is not None and node_id not in self.state.statuses:
            node_id = None
        changed = node_id != self.node_id
        self.node_id = node_id
        if node_id is not None:
            i = self.node_combo.findData(node_id)
            if self.node_combo.currentIndex() != i:
                self.node_combo.blockSignals(True)
                self.node_combo.setCurrentIndex(i)
                self.node_combo.blockSignals(False)
        if changed:
            self.panel.set_history(self.state.history.get(node_id) if node_id else None)
        self.stack.setCurrentIndex(1 if node_id else 0)
        self._update_facts()
        self._update_devices()

    def _status_changed(self, node_id: str) -> None:
        status = self.state.statuses.get(node_id)
        if status is not None and node_id in self._labels \
                and self._labels[node_id] != status.address.label:   # a renamed connection
            self._labels[node_id] = status.address.label
            i = self.node_combo.findData(node_id)
            if i >= 0:
                self.node_combo.setItemText(i, status.address.label)
        if node_id == self.node_id:
            self._update_facts()

    def _update_facts(self) -> None:
        status = self.state.statuses.get(self.node_id) if self.node_id else None
        if status is None:
            self.state_label.setText("")
            self.facts.setText("")
            return
        self.state_label.setText(status.state.value.capitalize())
        self.state_label.setProperty("state", status.state.value)
        self.state_label.style().unpolish(self.state_label)
        self.state_label.style().polish(self.state_label)
        lines = []
        if status.state is not ConnectionState.ONLINE and status.last_error:
            lines.append(f"<b>{status.last_error}</b>")
        stale = self.state.stale_note(self.node_id)
        if stale and self.state.latest.get(self.node_id) is not None:
            lines.append(f"<b style='color:#8a94a6'>Stale: the charts and devices show the node's "
                         f"last data ({stale}).</b>")
        info = status.info
        if info is None and status.state is not ConnectionState.UNAUTHORIZED:
            lines.append(f"{status.address.target}: waiting for the node to answer.")
        else:
            lines.append(f"<b>{info.hostname}</b> · {status.address.target} · musad "
                         f"{info.version} · {info.backend} · torch {info.torch_version or '—'}"
                         f" · Python {info.python_version or '—'} · {info.host_cpu_count} CPUs, "
                         f"{_gib(info.host_memory_total_bytes)} RAM"
                         f"{' · TLS' if info.tls else ''}{' · token auth' if info.auth_required else ''}")
            devs = ", ".join(f"#{d.index} {d.name} ({_gib(d.memory_total_bytes)})"
                             for d in info.devices)
            lines.append(f"Devices: {devs or 'none'}")
        self.facts.setText("<br>".join(lines))

    def _data_changed(self, node_id: str) -> None:
        if node_id == self.node_id:
            self._update_devices()

    def _update_devices(self) -> None:
        """The device line (health) and its tooltip (every field; "not reported by this
        device" for a field the device's library does not give)."""
        snap = self.state.latest.get(self.node_id) if self.node_id else None
        if snap is self._details_of:
            return
        self._details_of = snap
        devices = snap.devices if snap is not None else ()
        if not devices:
            self.device_health.setText("")
            self.device_health.setToolTip("")
            return
        bad = [d for d in devices if d.unhealthy]
        self.device_health.setText(
            "; ".join(f"<b style='color:#d0473c'>Device #{d.index} is unhealthy: {escape(d.health_reason or '')}</b>"
                      for d in bad) or f"Devices: {len(devices)} reporting, none unhealthy (hover for details)")
        columns = [device_details(d) for d in devices]
        head = "".join(f"<th>#{d.index}</th>" for d in devices)
        rows = "".join(f"<tr><td>{label}</td>" + "".join(f"<td>{col[i][1]}</td>" for col in columns) + "</tr>"
                       for i, (label, _) in enumerate(columns[0]))
        self.device_health.setToolTip(f"<table cellspacing=4><tr><th></th>{head}</tr>{rows}</table>")

    # --- timers ----------------------------------------------------------------------------

    def _pause(self, paused: bool) -> None:
        self.pause_button.setText("Resume" if paused else "Pause")
        self.panel.set_paused(paused)

    def set_active(self, active: bool) -> None:
        """The main window calls this when the view is shown or hidden: the chart timer runs
        only while the view is on screen. (No show/hideEvent override: PySide may call those
        during teardown on a half-destroyed wrapper.)"""
        if active:
            self.panel.start()
            self.panel.redraw(force=True)
        else:
            self.panel.stop()

    def stop(self) -> None:
        self.panel.stop()
