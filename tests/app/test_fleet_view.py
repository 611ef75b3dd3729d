"""Fleet table against a real daemon: telemetry arrives, item models pass qtmodeltester,
search / state filter / sort work, bad nodes are explained in their row."""

from __future__ import annotations

import pytest

from musaops.app.core import ConnectionState, NodeAddress, NodeStatus
from musaops.app.qt.fleet_state import FleetState
from musaops.app.qt.models.alerts_model import AlertsModel
from musaops.app.qt.models.fleet_model import (COL_DEVICES, COL_SEEN, COL_STATE, COL_TPS,
                                               DEVICES_ROLE, FleetModel)
from musaops.app.qt.views.fleet_view import FleetView

pytestmark = pytest.mark.timeout(120)


def _add(state, hub, address):
    nid = hub.new_id("node")
    state.ensure(NodeStatus(nid, address, ConnectionState.CONNECTING))
    hub.add_node(address, nid)
    return nid


@pytest.fixture
def fleet(qtbot, qt_hub):
    hub, bridge = qt_hub
    state = FleetState(bridge)
    view = FleetView(state)
    qtbot.addWidget(view)
    view.resize(1200, 600)
    view.show()
    yield hub, state, view
    view.stop()
    state.stop()


def test_telemetry_arrives_in_the_fleet_table(qtbot, fleet, daemon, qtmodeltester) -> None:
    hub, state, view = fleet
    nid = _add(state, hub, NodeAddress("127.0.0.1", daemon.port, name="local"))
    model = view.model
    qtbot.waitUntil(lambda: model.rowCount() == 1)
    row = model.row_of(nid)

    def has_live_tiles():
        tiles = model.index(row, COL_DEVICES).data(DEVICES_ROLE)
        return bool(tiles) and tiles[0].mem is not None and len(tiles[0].spark) >= 2
    qtbot.waitUntil(has_live_tiles, timeout=20_000)
    qtbot.waitUntil(lambda: model.index(row, COL_STATE).data().startswith("Online"))
    assert model.index(row, COL_SEEN).data() == "live"
    assert model.index(row, COL_TPS).data() != "—"       # a live snapshot is shown
    qtbot.waitUntil(lambda: view.summary.cards["online"].text() == "1 / 1")  # its own timer
    gpus = sum(d.backend in ("MUSA", "CUDA") for d in state.statuses[nid].info.devices)
    assert view.summary.cards["gpus"].text() == str(gpus)   # host CPUs are not GPUs
    qtmodeltester.check(model)
    qtmodeltester.check(view.proxy)


def test_search_state_filter_and_sort(qtbot, fleet, daemon) -> None:
    hub, state, view = fleet
    _add(state, hub, NodeAddress("127.0.0.1", daemon.port, name="alpha"))
    _add(state, hub, NodeAddress("127.0.0.1", 1, name="beta"))   # nothing listens on port 1
    qtbot.waitUntil(lambda: {s.state for s in state.statuses.values()}
                    == {ConnectionState.ONLINE, ConnectionState.OFFLINE}, timeout=20_000)
    proxy = view.proxy
    assert proxy.rowCount() == 2
    view.search.setText("alp")
    assert proxy.rowCount() == 1 and proxy.index(0, 0).data().startswith("alpha")
    view.search.setText("")
    view.state_combo.setCurrentText("Offline")
    assert proxy.rowCount() == 1 and proxy.index(0, 0).data().startswith("beta")
    view.state_combo.setCurrentText("All states")
    view.table.sortByColumn(COL_STATE, view.table.horizontalHeader().sortIndicatorOrder())
    assert proxy.rowCount() == 2


def test_unreachable_node_row_says_why(qtbot, fleet) -> None:
    hub, state, view = fleet
    nid = _add(state, hub, NodeAddress("127.0.0.1", 1, name="gone"))
    model = view.model
    qtbot.waitUntil(lambda: state.statuses[nid].state is ConnectionState.OFFLINE, timeout=20_000)
    qtbot.waitUntil(lambda: view.summary.cards["alerts"].text() == "1")  # never seen: at once
    text = model.index(model.row_of(nid), COL_STATE).data()
    assert text.startswith("Offline") and "Cannot reach 127.0.0.1:1" in text


def test_alerts_model_passes_the_model_tester(qtbot, qtmodeltester) -> None:
    from musaops.app.core.alerts import AlertEngine
    eng = AlertEngine()
    eng.on_status(NodeStatus("n", NodeAddress("h", 1), ConnectionState.OFFLINE, "refused"))
    m = AlertsModel()
    m.set_alerts(eng.alerts)
    assert m.rowCount() == 1 and "offline" in m.index(0, 2).data()
    qtmodeltester.check(m)


def test_empty_fleet_shows_a_hint(qtbot, fleet, qtmodeltester) -> None:
    _, _, view = fleet
    assert view.stack.currentWidget() is view.empty
    assert "--connect" in view.empty.text()
    qtmodeltester.check(FleetModel(view.state))


def test_flush_spreads_on_screen_repaints(qtbot) -> None:
    from musaops.app.qt.bridge import HubBridge
    state = FleetState(HubBridge())
    model = FleetModel(state)
    for i in range(5):
        state.ensure(NodeStatus(f"n{i}", NodeAddress("h", 1000 + i), ConnectionState.CONNECTING))
    for i in range(5):
        state.status_changed.emit(f"n{i}")
    changed = []
    model.dataChanged.connect(lambda tl, br, *_: changed.append((tl.row(), br.row())))
    model.flush(limit_to={0, 1, 2}, budget=1)   # one row on screen; rows 3-4 off screen wait
    assert changed == [(0, 0)]
    assert model.dirty_rows() == {1, 2, 3, 4}
    changed.clear()
    model.flush(limit_to={0, 1, 2}, budget=1)
    model.flush(limit_to={0, 1, 2}, budget=1)
    assert changed == [(1, 1), (2, 2)]
    changed.clear()
    model.flush(limit_to={2, 3, 4}, budget=5)   # scrolled: rows 3-4 on screen, one signal each
    assert changed == [(3, 3), (4, 4)]
    changed.clear()
    model.flush()
    assert changed == []          # nothing left dirty
    for i in (0, 1, 2, 4):
        state.status_changed.emit(f"n{i}")
    model.flush()                 # no screen given: every dirty row, in contiguous spans
    assert changed == [(0, 2), (4, 4)]
    state.stop()
