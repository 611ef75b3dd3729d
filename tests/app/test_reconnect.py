"""A daemon stopped and restarted on the same port is shown offline, then online again,
without anything done by the user."""

from __future__ import annotations

import pytest

from musaops.app.core import ConnectionState, NodeAddress, NodeStatus
from musaops.app.qt.fleet_state import FleetState
from musaops.app.qt.models.fleet_model import COL_STATE
from musaops.app.qt.views.fleet_view import FleetView

pytestmark = pytest.mark.timeout(180)


def test_stopped_then_restarted_daemon_goes_offline_then_online(qtbot, qt_hub, make_daemon) -> None:
    hub, bridge = qt_hub
    state = FleetState(bridge)
    view = FleetView(state)
    qtbot.addWidget(view)
    first = make_daemon()
    port = first.port
    address = NodeAddress("127.0.0.1", port, name="flaky")
    nid = hub.new_id("node")
    state.ensure(NodeStatus(nid, address, ConnectionState.CONNECTING))
    hub.add_node(address, nid)
    qtbot.waitUntil(lambda: state.statuses[nid].state is ConnectionState.ONLINE, timeout=20_000)
    qtbot.waitUntil(lambda: nid in state.latest, timeout=20_000)
    started_before = state.statuses[nid].info.started_unix_ms

    first.stop()
    first.stop = lambda: None   # already stopped: make_daemon's teardown must not stop it twice
    qtbot.waitUntil(lambda: state.statuses[nid].state is ConnectionState.OFFLINE, timeout=30_000)
    row = view.model.row_of(nid)
    view.refresh()
    assert view.model.index(row, COL_STATE).data().startswith("Offline")
    assert state.statuses[nid].last_seen > 0 and state.statuses[nid].last_error

    second = make_daemon(**{"server.listen": f"127.0.0.1:{port}"})
    assert second.port == port
    qtbot.waitUntil(lambda: state.statuses[nid].state is ConnectionState.ONLINE, timeout=30_000)
    assert state.statuses[nid].info.started_unix_ms >= started_before
    n_before = len(state.history[nid].devices[0])
    qtbot.waitUntil(lambda: len(state.history[nid].devices[0]) > n_before, timeout=20_000)
    view.refresh()
    assert view.model.index(row, COL_STATE).data() == "Online"
    view.stop()
    state.stop()
