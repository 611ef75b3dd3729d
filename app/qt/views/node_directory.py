"""What the Models and Playground views need to know about every node, kept current.

Listens to the bridge's `status`, `snapshots`, `models` and `node_removed` signals and keeps
the latest NodeStatus, the latest Snapshot and the repository per node, so the views can
fill their node and model pickers and the deploy dialog can check memory without asking the
hub anything. Only plain dataclasses are kept; nothing here touches the network.

Besides `nodes_changed` (something about the set of nodes changed), each change is also
announced for the one node it concerns (`node_added`, `node_updated`, `node_gone`), so a view
can update that node's entry instead of rebuilding a list of every node: at 200 nodes a
rebuild per signal costs O(n^2) while the fleet connects. Both fire at once, never deferred.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from PySide6.QtCore import QObject, Signal

from musaops.app.core import ConnectionState, ModelEntry, NodeStatus, Snapshot


class NodeDirectory(QObject):
    """Latest status, telemetry and repository per node id."""

    nodes_changed = Signal()        # a node came, went or changed state
    node_added = Signal(str)        # a node id seen for the first time (before nodes_changed)
    node_updated = Signal(str)      # its state, address, info or telemetry's model set changed
    node_gone = Signal(str)         # a node was removed
    models_changed = Signal(str)    # a node's repository answer arrived
    snapshot = Signal(str)          # a node's latest snapshot changed

    def __init__(self, bridge: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._status: dict[str, NodeStatus] = {}
        self._snapshot: dict[str, Snapshot] = {}
        self._models: dict[str, tuple[ModelEntry, ...]] = {}
        bridge.status.connect(self._on_status)
        bridge.snapshots.connect(self._on_snapshots)
        bridge.models.connect(self._on_models)
        if hasattr(bridge, "node_removed"):
            bridge.node_removed.connect(self._on_removed)

    def seed(self, statuses: Iterable[NodeStatus], latest: Mapping[str, Snapshot] | None = None) -> None:
        """Takes what was known before this directory existed (e.g. the main window's FleetState)."""
        added = []
        for status in statuses:
            if status.node_id not in self._status:
                self._status[status.node_id] = status
                added.append(status.node_id)
        for node_id, snap in (latest or {}).items():
            self._snapshot.setdefault(node_id, snap)
        for node_id in added:
            self.node_added.emit(node_id)
        self.nodes_changed.emit()

    # -- queries -----------------------------------------------------------------------
    def node_ids(self) -> list[str]:
        return list(self._status)

    def status(self, node_id: str) -> NodeStatus | None:
        return self._status.get(node_id)

    def label(self, node_id: str) -> str:
        s = self._status.get(node_id)
        return s.address.label if s else node_id

    def online(self, node_id: str) -> bool:
        s = self._status.get(node_id)
        return s is not None and s.state in (ConnectionState.ONLINE, ConnectionState.DEGRADED)

    def latest(self, node_id: str) -> Snapshot | None:
        return self._snapshot.get(node_id)

    def models(self, node_id: str) -> tuple[ModelEntry, ...]:
        return self._models.get(node_id, ())

    def ready_models(self, node_id: str) -> list[str]:
        """Models serving Generate: from the repository answer, else from telemetry."""
        names = [m.name for m in self._models.get(node_id, ()) if m.state == "ready"]
        snap = self._snapshot.get(node_id)
        if snap is not None:
            names += [m.model for m in snap.models if m.model not in names]
        return names

    # -- bridge slots --------------------------------------------------------------------
    def _on_status(self, status: NodeStatus) -> None:
        old = self._status.get(status.node_id)
        self._status[status.node_id] = status
        if old is None:
            self.node_added.emit(status.node_id)
            self.nodes_changed.emit()
        elif old.state != status.state or old.address != status.address or old.info != status.info:
            self.node_updated.emit(status.node_id)
            self.nodes_changed.emit()

    def _on_snapshots(self, node_id: str, snapshots: tuple[Snapshot, ...]) -> None:
        if not snapshots:
            return
        last = snapshots[-1]
        prev = self._snapshot.get(node_id)
        self._snapshot[node_id] = last
        self.snapshot.emit(node_id)
        if prev is None or {m.model for m in prev.models} != {m.model for m in last.models}:
            if node_id in self._status:
                self.node_updated.emit(node_id)
            self.nodes_changed.emit()

    def _on_models(self, node_id: str, models: tuple[ModelEntry, ...]) -> None:
        self._models[node_id] = tuple(models)
        self.models_changed.emit(node_id)

    def _on_removed(self, node_id: str) -> None:
        known = node_id in self._status
        for d in (self._status, self._snapshot, self._models):
            d.pop(node_id, None)
        if known:
            self.node_gone.emit(node_id)
        self.nodes_changed.emit()
