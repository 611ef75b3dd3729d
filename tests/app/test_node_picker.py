"""The Node view's picker follows the fleet one node at a time: a joining node adds one item,
a renamed one relabels its item, a removed one takes only its item away, and the chosen node
(and the history its charts show) stays put unless it is the one that went.

Statuses are fed through a real HubBridge by hand, as the hub would: no node needs to exist.
"""

from __future__ import annotations

import pytest

from musaops.app.core import ConnectionState, NodeAddress, NodeStatus
from musaops.app.qt.bridge import HubBridge
from musaops.app.qt.fleet_state import FleetState
from musaops.app.qt.views.node_view import NodeView

pytestmark = pytest.mark.timeout(120)


def _status(node_id: str, name: str, state=ConnectionState.CONNECTING) -> NodeStatus:
    return NodeStatus(node_id, NodeAddress("127.0.0.1", 1, name=name), state)


def test_node_picker_updates_the_one_node_in_place(qtbot) -> None:
    bridge = HubBridge()
    state = FleetState(bridge)
    view = NodeView(state)
    qtbot.addWidget(view)
    box = view.node_combo
    inserted: list[int] = []
    removed: list[int] = []
    box.model().rowsInserted.connect(lambda _p, first, last: inserted.append(last - first + 1))
    box.model().rowsRemoved.connect(lambda _p, first, last: removed.append(last - first + 1))

    def ids() -> list[str]:
        return [box.itemData(i) for i in range(box.count())]

    assert view.node_id is None and view.stack.currentIndex() == 0
    for i in range(1, 6):
        bridge.status.emit(_status(f"n{i}", f"node {i}"))
    assert ids() == [f"n{i}" for i in range(1, 6)]
    assert sum(inserted) == 5 and removed == [], "each joining node adds one item, nothing is rebuilt"
    assert view.node_id == "n1" and view.panel.history is state.history["n1"]
    assert view.stack.currentIndex() == 1

    box.setCurrentIndex(2)   # the operator picks node 3
    assert view.node_id == "n3" and view.panel.history is state.history["n3"]
    bridge.status.emit(_status("n6", "node 6"))
    assert ids()[-1] == "n6" and view.node_id == "n3" and box.currentIndex() == 2
    bridge.status.emit(_status("n4", "renamed", ConnectionState.ONLINE))
    assert box.itemText(3) == "renamed" and view.node_id == "n3" and removed == []
    bridge.status.emit(_status("n3", "three", ConnectionState.ONLINE))
    assert box.itemText(2) == "three" and view.state_label.text() == "Online"

    bridge.node_removed.emit("n2")   # another node goes: the chosen one stays
    assert removed == [1] and view.node_id == "n3" and box.currentText() == "three"
    bridge.node_removed.emit("n3")   # the chosen one goes: the first node is shown
    assert ids() == ["n1", "n4", "n5", "n6"] and view.node_id == "n1"
    assert view.panel.history is state.history["n1"] and box.currentIndex() == 0
    for nid in ("n1", "n4", "n5", "n6"):
        bridge.node_removed.emit(nid)
    assert box.count() == 0 and view.node_id is None and view.stack.currentIndex() == 0
    assert sum(inserted) == 6 and sum(removed) == 6
    view.stop()
    state.stop()
