"""Views follow the FleetState one node at a time: a node joining queries that node's audit
log only (its records slotted in among those shown), a hidden Audit view queries nothing
until shown, and the Playground's pickers update in place.

Real daemons and a real NodeHub; RPCs are counted where the Audit view hands them to the
hub (`NodeHub.audit_query`), nothing is stubbed.
"""

from __future__ import annotations

import pytest

from musaops.app.core import ConnectionState, NodeAddress, NodeStatus
from musaops.app.qt.bridge import HubBridge
from musaops.app.qt.fleet_state import FleetState
from musaops.app.qt.views.audit_view import AuditView
from musaops.app.qt.views.playground_parts import TargetPicker
from musaops.app.services.audit_feed import AuditMerger, AuditRow, Page, merge_key
from musaops.daemon.trust.caller import Caller
from tests.app.conftest import load_all_audit_pages

pytestmark = pytest.mark.timeout(120)


def _count_queries(monkeypatch, hub) -> list[tuple[str, str]]:  # noqa: ANN001
    calls: list[tuple[str, str]] = []
    query = hub.audit_query

    def counting(node_id, *args, **kwargs):  # noqa: ANN001
        calls.append((node_id, "query"))
        return query(node_id, *args, **kwargs)
    monkeypatch.setattr(hub, "audit_query", counting)
    return calls


def test_a_joining_node_is_the_only_one_queried_and_slots_in(qtbot, qt_hub, make_daemon, monkeypatch):
    hub, bridge = qt_hub
    daemons = [make_daemon() for _ in range(3)]
    for i in range(6):   # interleaved in time, so the joining node's rows fall among those shown
        for k, d in enumerate(daemons):
            d.ctx.audit.record_sync("node.Deploy", f"m{i}", {"i": i}, "ok",
                                    caller=Caller(f"op{k}", "operator", "ipv4:127.0.0.1:1"))
    view = AuditView(hub, bridge)
    qtbot.addWidget(view)
    view.model.page_size = 4
    calls = _count_queries(monkeypatch, hub)
    view.show()
    qtbot.waitUntil(view.isVisible)
    a = hub.add_node(NodeAddress("127.0.0.1", daemons[0].port, name="a"))
    qtbot.waitUntil(lambda: view.model.rowCount() >= 4, timeout=20_000)
    assert {n for n, _ in calls} == {a}
    load_all_audit_pages(qtbot, view)   # a's log read to the end: the table's own fetchMore cannot ask it again

    calls.clear()
    b = hub.add_node(NodeAddress("127.0.0.1", daemons[1].port, name="b"))
    qtbot.waitUntil(lambda: any(r.source == b for r in view.model.rows()), timeout=20_000)
    qtbot.waitUntil(lambda: not view.model.loading, timeout=20_000)
    assert calls and {n for n, _ in calls} == {b}, "only the node that joined is asked"
    assert view.model.spec.sources == (a, b)
    load_all_audit_pages(qtbot, view)
    rows = view.model.rows()
    assert [merge_key(r) for r in rows] == sorted((merge_key(r) for r in rows), reverse=True)
    assert sum(r.source == a for r in rows) == daemons[0].ctx.audit.count()
    assert sum(r.source == b for r in rows) == daemons[1].ctx.audit.count()

    # Hidden: a joining node gets its source row at once, but nothing is queried ...
    view.hide()
    calls.clear()
    c = hub.add_node(NodeAddress("127.0.0.1", daemons[2].port, name="c"))
    qtbot.waitUntil(lambda: c in view.source_rows, timeout=20_000)
    qtbot.waitUntil(lambda: view.directory.online(c), timeout=20_000)
    assert calls == []
    # ... until the view is shown again: the query runs once, every source asked.
    view.show()
    assert sorted(n for n, _ in calls) == sorted([a, b, c])
    qtbot.waitUntil(lambda: any(r.source == c for r in view.model.rows()), timeout=20_000)


def test_merger_slots_a_late_source_among_released_rows():
    def row(source: str, t: int, seq: int) -> AuditRow:
        return AuditRow(source, source, seq, t, "op", "operator", "", "x", "", "{}", "ok", "", "")

    m = AuditMerger(["a"])
    m.add(Page("a", (row("a", 50, 5), row("a", 30, 3)), False, cursor=3))
    released = m.take(2)
    assert [r.time_us for r in released] == [50, 30]
    m.add_source("b", released[-1])
    assert m.catching_up() and m.wanted(late_only=True) == [("b", 0)]
    m.add(Page("b", (row("b", 60, 9), row("b", 40, 8)), False, cursor=8))
    assert [r.time_us for r in m.take_late()] == [60, 40]
    assert m.catching_up(), "every row so far was late: the next page may hold more"
    m.wanted(late_only=True)
    m.add(Page("b", (row("b", 35, 7), row("b", 20, 6)), True))
    assert [r.time_us for r in m.take_late()] == [35]
    assert not m.catching_up()
    m.add(Page("a", (row("a", 10, 1),), True))
    assert [r.time_us for r in m.take(10)] == [20, 10] and m.exhausted


def _status(node_id: str, name: str, state=ConnectionState.CONNECTING) -> NodeStatus:
    return NodeStatus(node_id, NodeAddress("127.0.0.1", 1, name=name), state)


def test_target_picker_updates_the_one_node_in_place(qtbot):
    bridge = HubBridge()
    state = FleetState(bridge)
    picker = TargetPicker(state)
    qtbot.addWidget(picker)
    fills: list[str] = []
    picker.changed.connect(lambda: fills.append(picker.node_id()))
    bridge.status.emit(_status("n1", "one"))
    assert picker.node_id() == "n1" and fills == ["n1"]
    for i in range(2, 6):
        bridge.status.emit(_status(f"n{i}", f"node {i}"))
    assert [picker.node_box.itemData(i) for i in range(picker.node_box.count())] == [f"n{i}" for i in range(1, 6)]
    assert fills == ["n1"], "other nodes joining leave the chosen node's models alone"
    picker.set_target("n3")
    fills.clear()
    bridge.status.emit(_status("n4", "renamed", ConnectionState.ONLINE))
    assert picker.node_box.itemText(3) == "renamed" and picker.node_id() == "n3" and fills == []
    bridge.status.emit(_status("n3", "three", ConnectionState.ONLINE))
    assert picker.node_box.itemText(2) == "three" and fills == ["n3"]
    bridge.node_removed.emit("n2")
    assert picker.node_id() == "n3" and picker.node_box.count() == 4
    bridge.node_removed.emit("n3")
    assert picker.node_id() == "n1" and picker.node_box.count() == 3
    state.stop()


def test_models_picker_updates_in_place_and_reads_only_the_chosen_repository(qtbot, qt_hub, monkeypatch):
    from musaops.app.qt.views.models_view import ModelsView

    hub, _ = qt_hub
    bridge = HubBridge()   # statuses are fed by hand: no node needs to exist
    reads: list[str] = []
    refresh = hub.refresh_models

    def counting(node_id: str):
        reads.append(node_id)
        return refresh(node_id)
    monkeypatch.setattr(hub, "refresh_models", counting)
    view = ModelsView(hub, bridge)
    qtbot.addWidget(view)
    for i in range(1, 6):
        bridge.status.emit(_status(f"n{i}", f"node {i}", ConnectionState.ONLINE))
    box = view.node_box
    assert [box.itemData(i) for i in range(box.count())] == [f"n{i}" for i in range(1, 6)]
    assert view.current_node() == "n1" and reads == ["n1"], "only the chosen node's repository is read"
    bridge.status.emit(_status("n4", "renamed", ConnectionState.DEGRADED))
    assert box.itemText(3) == "renamed  ·  degraded" and view.current_node() == "n1" and reads == ["n1"]
    bridge.node_removed.emit("n1")
    assert view.current_node() == "n2" and box.count() == 4 and reads[-1] == "n2"
