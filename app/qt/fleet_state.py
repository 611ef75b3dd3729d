"""The GUI thread's one picture of the fleet: statuses, latest snapshots, history rings,
repositories and alerts.

One instance, owned by the main window and fed by the bridge; every view (fleet table, node
view, Models, Playground, Audit), the status bar and the alerts panel read from it and listen
to its signals, so each hub batch is stored once and every panel redraws on its own timer.
Only plain dataclasses are kept; nothing here touches the network.

Each change is announced for the one node it concerns, at once, never deferred, so a view
updates that node's entry instead of rebuilding a list of every node (at 200 nodes a rebuild
per signal costs O(n^2) while the fleet connects):
    node_added(id)       a node seen for the first time
    status_changed(id)   any status report (the fleet row, the status bar)
    node_updated(id)     what a picker shows changed: state, address, info, or the set of
                         models its telemetry reports
    data_changed(id)     new snapshots stored
    models_changed(id)   its repository answer (ListModels) arrived
    node_removed(id)     it is gone
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, QTimer, Signal

from ..core.alerts import Alert, AlertEngine, AlertThresholds
from ..core.nodes import UNUSABLE, ConnectionState, NodeStatus
from ..core.operations import ModelEntry
from ..core.ring import NodeHistory
from ..core.samples import Snapshot
from .bridge import HubBridge


class FleetState(QObject):
    node_added = Signal(str)
    node_removed = Signal(str)
    status_changed = Signal(str)        # node_id
    node_updated = Signal(str)          # node_id: state, address, info or telemetry's model set
    data_changed = Signal(str)          # node_id: new snapshots stored
    models_changed = Signal(str)        # node_id: its repository answer arrived
    alerts_changed = Signal()

    def __init__(self, bridge: HubBridge, history_capacity: int = 3600,
                 thresholds: AlertThresholds | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.order: list[str] = []
        self.statuses: dict[str, NodeStatus] = {}
        self.latest: dict[str, Snapshot] = {}
        self.history: dict[str, NodeHistory] = {}
        self.repositories: dict[str, tuple[ModelEntry, ...]] = {}
        self.alerts = AlertEngine(thresholds)
        self._capacity = history_capacity
        bridge.status.connect(self.on_status)
        bridge.snapshots.connect(self.on_snapshots)
        bridge.models.connect(self.on_models)
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
        old = self.statuses.get(nid)
        self.statuses[nid] = status
        if old is None:
            self.order.append(nid)
            self.history[nid] = NodeHistory(self._capacity)
            self.node_added.emit(nid)
        else:
            self.status_changed.emit(nid)
            if old.state != status.state or old.address != status.address or old.info != status.info:
                self.node_updated.emit(nid)
        if self.alerts.on_status(status):
            self.alerts_changed.emit()

    def on_snapshots(self, node_id: str, snapshots: tuple[Snapshot, ...]) -> None:
        hist = self.history.get(node_id)
        if hist is None or not snapshots:
            return
        hist.add_many(snapshots)
        changed = False
        for s in snapshots:
            changed |= self.alerts.on_snapshot(node_id, s)
        prev, last = self.latest.get(node_id), snapshots[-1]
        self.latest[node_id] = last
        self.data_changed.emit(node_id)
        if prev is None or {m.model for m in prev.models} != {m.model for m in last.models}:
            self.node_updated.emit(node_id)
        if changed:
            self.alerts_changed.emit()

    def on_models(self, node_id: str, models: tuple[ModelEntry, ...]) -> None:
        self.repositories[node_id] = tuple(models)
        self.models_changed.emit(node_id)
        if self.alerts.on_models(node_id, self.repositories[node_id]):
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
        self.repositories.pop(node_id, None)
        self.node_removed.emit(node_id)
        if self.alerts.forget_node(node_id):
            self.alerts_changed.emit()

    # -- queries (the node and model pickers, the deploy dialog) ------------------------------
    def node_ids(self) -> list[str]:
        return list(self.order)

    def status(self, node_id: str) -> NodeStatus | None:
        return self.statuses.get(node_id)

    def label(self, node_id: str) -> str:
        s = self.statuses.get(node_id)
        return s.address.label if s else node_id

    def online(self, node_id: str) -> bool:
        s = self.statuses.get(node_id)
        return s is not None and s.state in (ConnectionState.ONLINE, ConnectionState.DEGRADED)

    def models(self, node_id: str) -> tuple[ModelEntry, ...]:
        return self.repositories.get(node_id, ())

    def ready_models(self, node_id: str) -> list[str]:
        """Models serving Generate: from the repository answer, else from telemetry."""
        names = [m.name for m in self.repositories.get(node_id, ()) if m.state == "ready"]
        snap = self.latest.get(node_id)
        if snap is not None:
            names += [m.model for m in snap.models if m.model not in names]
        return names

    def model_notice(self, node_id: str, model: str) -> str:
        """The sentence the node asks to show beside `model` (ModelInfo.notice), or ""."""
        return next((m.notice for m in self.repositories.get(node_id, ()) if m.name == model), "")

    def stale_note(self, node_id: str) -> str:
        """"" while the node is usable; else why what the views still show of it is stale and
        when it was last updated, e.g. "offline · last update 14:02:31" (the one wording every
        view uses for an offline or unauthorized node's data)."""
        s = self.statuses.get(node_id)
        if s is None or s.state not in UNUSABLE:
            return ""
        when = (time.strftime("%H:%M:%S", time.localtime(s.last_seen)) if s.last_seen
                else "never")
        return f"{s.state.value} · last update {when}"

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
                   if s.info is not None and s.state not in UNUSABLE
                   for d in s.info.devices if d.backend in ("MUSA", "CUDA"))  # not host CPUs
        tps = sum(snap.tokens_per_second for nid, snap in self.latest.items()
                  if self.statuses.get(nid) and self.statuses[nid].state not in UNUSABLE)
        return {"nodes": len(self.statuses), "online": online, "gpus": gpus,
                "tokens_per_second": tps, "alerts": len(self.alerts.alerts)}
