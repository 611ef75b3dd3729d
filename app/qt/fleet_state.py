"""The GUI thread's picture of the fleet: statuses, latest snapshots, history rings, alerts.

One instance, owned by the main window and fed by the bridge; the fleet model, node view,
status bar and alerts panel read from it and listen to its signals, so each hub batch is
stored once and every panel redraws on its own timer.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, QTimer, Signal

from ..core.alerts import Alert, AlertEngine, AlertThresholds
from ..core.nodes import ConnectionState, NodeStatus
from ..core.ring import NodeHistory
from ..core.samples import Snapshot
from .bridge import HubBridge


class FleetState(QObject):
    node_added = Signal(str)
    node_removed = Signal(str)
    status_changed = Signal(str)        # node_id
    data_changed = Signal(str)          # node_id: new snapshots stored
    alerts_changed = Signal()

    def __init__(self, bridge: HubBridge, history_capacity: int = 3600,
                 thresholds: AlertThresholds | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.order: list[str] = []
        self.statuses: dict[str, NodeStatus] = {}
        self.latest: dict[str, Snapshot] = {}
        self.history: dict[str, NodeHistory] = {}
        self.alerts = AlertEngine(thresholds)
        self._capacity = history_capacity
        bridge.status.connect(self.on_status)
        bridge.snapshots.connect(self.on_snapshots)
        bridge.deploy_event.connect(self.on_deploy_event)
        bridge.node_removed.connect(self.remove)
        # Offline alerts have a grace period: re-check once a second.
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._on_tick)
        self._tick.start()

    def stop(self) -> None:
        self._tick.stop()

    def ensure(self, status: NodeStatus) -> None:
        """Registers a node before the hub reports on it (so it shows as connecting)."""
        if status.node_id not in self.statuses:
            self.on_status(status)

    def on_status(self, status: NodeStatus) -> None:
        nid = status.node_id
        is_new = nid not in self.statuses
        self.statuses[nid] = status
        if is_new:
            self.order.append(nid)
            self.history[nid] = NodeHistory(self._capacity)
            self.node_added.emit(nid)
        else:
            self.status_changed.emit(nid)
        if self.alerts.on_status(status):
            self.alerts_changed.emit()

    def on_snapshots(self, node_id: str, snapshots: tuple[Snapshot, ...]) -> None:
        hist = self.history.get(node_id)
        if hist is None:
            return
        hist.add_many(snapshots)
        changed = False
        for s in snapshots:
            changed |= self.alerts.on_snapshot(node_id, s)
        self.latest[node_id] = snapshots[-1]
        self.data_changed.emit(node_id)
        if changed:
            self.alerts_changed.emit()

    def on_deploy_event(self, event) -> None:
        if self.alerts.on_deploy_event(event):
            self.alerts_changed.emit()

    def remove(self, node_id: str) -> None:
        if node_id not in self.statuses:
            return
        del self.statuses[node_id]
        self.order.remove(node_id)
        self.latest.pop(node_id, None)
        self.history.pop(node_id, None)
        self.node_removed.emit(node_id)
        if self.alerts.forget_node(node_id):
            self.alerts_changed.emit()

    def set_thresholds(self, thresholds: AlertThresholds) -> None:
        self.alerts.thresholds = thresholds

    def open_alerts(self) -> list[Alert]:
        return self.alerts.alerts

    def _on_tick(self) -> None:
        if self.alerts.tick(list(self.statuses.values()), time.time()):
            self.alerts_changed.emit()

    # Summary figures for the status bar.
    def summary(self) -> dict[str, float]:
        online = sum(1 for s in self.statuses.values()
                     if s.state in (ConnectionState.ONLINE, ConnectionState.DEGRADED))
        gpus = sum(1 for s in self.statuses.values()
                   if s.info is not None and s.state is not ConnectionState.OFFLINE
                   for d in s.info.devices if d.backend in ("MUSA", "CUDA"))  # not host CPUs
        tps = sum(snap.tokens_per_second for nid, snap in self.latest.items()
                  if self.statuses.get(nid) and self.statuses[nid].state is not ConnectionState.OFFLINE)
        return {"nodes": len(self.statuses), "online": online, "gpus": gpus,
                "tokens_per_second": tps, "alerts": len(self.alerts.alerts)}
