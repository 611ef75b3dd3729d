"""Coalesced delivery and repaint of telemetry: the bridge keeps the hub's order and hands a
burst over in slices; a fleet row flushed once after several batches shows the newest one;
rows off screen are left alone until they scroll into view, then painted with their newest
sample. No timing assertions: these check what is delivered and drawn, not how fast."""

from __future__ import annotations

import threading

import pytest

from musaops.app.core import ConnectionState, NodeAddress, NodeStatus
from musaops.app.core.nodes import DeviceInfo, NodeInfo
from musaops.app.core.samples import DeviceSample, HostSample, ModelStatsSample, Snapshot
from musaops.app.qt.bridge import HubBridge
from musaops.app.qt.fleet_state import FleetState
from musaops.app.qt.models.fleet_model import COL_DEVICES, COL_TPS, DEVICES_ROLE, STAMP_ROLE
from musaops.app.qt.views.fleet_view import FleetView

pytestmark = pytest.mark.timeout(60)

DEVICES = 2


def _online(nid: str, port: int) -> NodeStatus:
    info = NodeInfo(f"host-{nid}", backend="MUSA",
                    devices=tuple(DeviceInfo(i, "MTT S4000", backend="MUSA",
                                             memory_total_bytes=48 << 30) for i in range(DEVICES)))
    return NodeStatus(nid, NodeAddress("10.0.0.1", port, name=nid), ConnectionState.ONLINE,
                      last_seen=1.0, info=info)


def _snap(t_s: int, util: float, tps: float = 0.0) -> Snapshot:
    return Snapshot(t_s * 1000, host=HostSample(10.0, 1, 2),
                    devices=tuple(DeviceSample(i, 1 << 30, 48 << 30, util) for i in range(DEVICES)),
                    models=(ModelStatsSample("m", generation_tokens_per_second=tps),))


def test_bridge_keeps_the_hub_order_and_delivers_on_the_gui_thread(qtbot) -> None:
    bridge = HubBridge()
    got: list[tuple] = []
    threads: set[int] = set()

    def record(*args):
        threads.add(threading.get_ident())
        got.append(args)
    bridge.status.connect(lambda s: record("status", s))
    bridge.snapshots.connect(lambda nid, snaps: record("snapshots", nid, snaps))
    bridge.tokens.connect(lambda c: record("tokens", c))
    bridge.generation_done.connect(lambda d: record("done", d))
    bridge.node_removed.connect(lambda nid: record("removed", nid))

    def hub() -> None:   # what NodeHub does, from its own thread
        for i in range(300):
            bridge.on_snapshots(f"n{i % 7}", (i,))
            if i % 100 == 0:
                bridge.on_status(i)
        bridge.on_tokens("a")
        bridge.on_tokens("b")
        bridge.on_generation_done("end")
        bridge.on_node_removed("n1")
    t = threading.Thread(target=hub)
    t.start()
    t.join()
    assert got == []                      # nothing runs on the hub thread
    qtbot.waitUntil(lambda: bridge.pending() == 0)
    expected: list[tuple] = []
    for i in range(300):
        expected.append(("snapshots", f"n{i % 7}", (i,)))
        if i % 100 == 0:
            expected.append(("status", i))
    expected += [("tokens", "a"), ("tokens", "b"), ("done", "end"), ("removed", "n1")]
    assert got == expected
    assert threads == {threading.get_ident()}
    bridge.on_status("now")               # on the GUI thread itself: delivered at once
    assert got[-1] == ("status", "now")


def test_bridge_hands_a_burst_over_in_slices(qtbot) -> None:
    bridge = HubBridge()
    bridge.SLICE_S = 0.0                  # every call over the budget: one call per slice
    got: list[int] = []
    bridge.status.connect(got.append)
    t = threading.Thread(target=lambda: [bridge.on_status(i) for i in range(5)])
    t.start()
    t.join()
    bridge._drain()                       # one turn of the event loop's worth
    assert got == [0] and bridge.pending() == 4
    qtbot.waitUntil(lambda: bridge.pending() == 0)   # the rest follows on later turns
    assert got == [0, 1, 2, 3, 4]


@pytest.fixture
def fleet(qtbot):
    bridge = HubBridge()
    state = FleetState(bridge)
    view = FleetView(state)
    qtbot.addWidget(view)
    view.resize(1200, 420)
    view.show()
    view.timer.stop()                     # the test drives refresh() itself
    yield state, view
    view.stop()
    state.stop()


def test_a_row_flushed_once_after_several_batches_shows_the_newest(qtbot, fleet) -> None:
    state, view = fleet
    state.on_status(_online("n0", 1))
    for t, util in ((100, 10.0), (101, 20.0), (102, 30.0)):
        state.on_snapshots("n0", (_snap(t, util, tps=util * 10),))
    model = view.model
    changed: list[int] = []
    model.dataChanged.connect(lambda tl, br, *_: changed.append(tl.row()))
    model.flush()
    assert changed == [0]                 # three batches, one repaint
    assert model.index(0, COL_TPS).data() == "300"
    tiles = model.index(0, COL_DEVICES).data(DEVICES_ROLE)
    assert [t.util for t in tiles] == [30.0] * DEVICES
    assert list(tiles[0].spark) == [10.0, 20.0, 30.0]


def test_rows_off_screen_wait_and_are_painted_with_their_newest_sample_when_shown(
        qtbot, fleet) -> None:
    state, view = fleet
    nodes = [f"n{i:02d}" for i in range(30)]
    for i, nid in enumerate(nodes):
        state.on_status(_online(nid, 100 + i))
        state.on_snapshots(nid, (_snap(100, 5.0),))
    table, model = view.table, view.model
    qtbot.waitUntil(lambda: table.rowAt(0) == 0)
    visible = view._visible_source_rows()
    assert 0 < len(visible) < len(nodes)
    last = model.row_of(nodes[-1])
    assert last not in visible            # sorted by name: n29 is at the bottom

    table.viewport().grab()               # paint what is on screen now
    for nid in nodes:                     # a new sample for every node
        state.on_snapshots(nid, (_snap(101, 77.0),))
    changed: list[int] = []
    model.dataChanged.connect(lambda tl, br, *_: changed.extend(range(tl.row(), br.row() + 1)))
    for _ in range(view.TICKS_PER_SECOND):   # one second of ticks
        view.refresh()
    assert set(changed) == visible        # every row on screen repainted, none off screen
    assert last in model.dirty_rows()
    assert nodes[-1] not in view.delegate._cache   # never painted: nothing rendered for it

    table.scrollToBottom()
    qtbot.waitUntil(lambda: last in view._visible_source_rows())
    table.viewport().grab()               # the row scrolled into view is painted...
    stamp = model.index(last, COL_DEVICES).data(STAMP_ROLE)
    assert stamp[0] == 101.0
    assert view.delegate._cache[nodes[-1]][0][0] == stamp   # ...from its newest sample
    changed.clear()
    for _ in range(view.TICKS_PER_SECOND):
        view.refresh()
    assert last in changed and last not in model.dirty_rows()
