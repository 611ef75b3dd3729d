"""The Audit view against two real daemons and a real console store: merged paging with
fetchMore, filters, export with progress off the GUI thread, and Verify per node."""

from __future__ import annotations

import json
import sqlite3

import pytest

from musaops.app.core.nodes import NodeAddress
from musaops.app.qt.models.audit_model import COL_OUTCOME
from musaops.app.qt.views.audit_view import AuditView
from musaops.app.services.audit_feed import CONSOLE_SOURCE
from musaops.app.services.operator_log import OperatorLog
from musaops.app.services.store import Store, StoreWorker
from musaops.daemon.trust.caller import Caller
from tests.app.conftest import load_all_audit_pages

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def setup(qtbot, qt_hub, make_daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("MUSA_CONSOLE_KEYRING", "0")
    hub, bridge = qt_hub
    daemons = [make_daemon(), make_daemon()]
    store = StoreWorker(Store(tmp_path / "console.sqlite3"))
    # interleave: daemon A, console, daemon B, ... so the merge has to work
    for i in range(12):
        for k, d in enumerate(daemons):
            d.ctx.audit.record_sync("node.Deploy" if i % 2 else "node.Undeploy", f"model-{i}",
                                    {"i": i}, "failed" if i % 4 == 3 else "ok",
                                    caller=Caller(f"op{k}", "operator", "ipv4:127.0.0.1:1"))
        store.submit("log", "deploy", f"node-{i}", f"detail {i}", "ok").result(10)
    hub.oplog = OperatorLog(store)   # as musa-console wires it: the hub logs what it carries out
    view = AuditView(hub, bridge, store=store)
    qtbot.addWidget(view)
    view.model.page_size = 7
    ids = [hub.add_node(NodeAddress("127.0.0.1", d.port, name=f"node{k}")) for k, d in enumerate(daemons)]
    qtbot.waitUntil(lambda: set(ids) <= set(view.source_rows), timeout=20000)
    yield view, daemons, ids, store
    view.cancel_export()
    store.close()


def test_merged_paging_filters_and_model_contract(qtbot, qtmodeltester, setup):
    view, daemons, ids, _ = setup
    view.apply_filters()
    qtbot.waitUntil(lambda: view.model.rowCount() >= 7, timeout=20000)
    assert view.model.rowCount() < 12 * 3, "fetchMore pages: not everything at once"
    load_all_audit_pages(qtbot, view)
    rows = view.model.rows()
    daemon_rows = [r for r in rows if r.source != CONSOLE_SOURCE]
    # every daemon's whole log (config.change at start + 12 records) and all console entries
    expected = sum(d.ctx.audit.count() for d in daemons)
    assert len(daemon_rows) == expected and sum(r.source == CONSOLE_SOURCE for r in rows) == 12
    assert [r.time_us for r in rows] == sorted((r.time_us for r in rows), reverse=True)
    assert {r.source for r in rows} == {*ids, CONSOLE_SOURCE}
    qtmodeltester.check(view.model)

    # filters: one node, one action, one outcome
    view.source_rows[ids[1]].include.setChecked(True)
    view.source_rows[ids[0]].include.setChecked(False)
    view.source_rows[CONSOLE_SOURCE].include.setChecked(False)
    view.action.setCurrentText("node.Deploy")
    view.outcome.setCurrentText("failed")
    view.apply_filters()
    load_all_audit_pages(qtbot, view)
    got = view.model.rows()
    assert [(r.source, r.action, r.outcome, r.actor) for r in got] == [(ids[1], "node.Deploy", "failed", "op1")] * 3
    assert view.model.index(0, COL_OUTCOME).data() == "failed"
    assert "3 records" in view.status.text()


def test_export_of_the_filtered_view_with_progress(qtbot, setup, tmp_path):
    view, daemons, ids, _ = setup
    view.actor.setText("op0")
    view.apply_filters()
    out = tmp_path / "view.jsonl"
    progress = []
    view.export_progress.connect(lambda f, n: progress.append(f))
    with qtbot.waitSignal(view.export_finished, timeout=30000) as done:
        assert view.start_export(out, "jsonl") is not None
    rows_written, error = done.args
    assert error == "" and rows_written == 12
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {r["actor"] for r in lines} == {"op0"} and len(lines) == 12
    assert [r["time_us"] for r in lines] == sorted((r["time_us"] for r in lines), reverse=True)
    assert progress and progress[-1] == 1.0
    assert not view.progress.isVisible() and view.export_button.isEnabled()
    # CSV and JSON of the same view
    for fmt in ("csv", "json"):
        with qtbot.waitSignal(view.export_finished, timeout=30000) as done:
            view.start_export(tmp_path / f"view.{fmt}", fmt)
        assert done.args == [12, ""]
    assert len(json.loads((tmp_path / "view.json").read_text())) == 12
    assert len((tmp_path / "view.csv").read_text().splitlines()) == 13


def test_verify_button_per_node_reports_ok_then_the_broken_record(qtbot, setup):
    view, daemons, ids, _ = setup
    row = view.source_rows[ids[0]]
    assert not view.source_rows[CONSOLE_SOURCE].verify.isVisible()
    row.verify.click()
    qtbot.waitUntil(lambda: row.result.text().startswith("✓"), timeout=20000)
    db = daemons[0].config.storage.db_url.removeprefix("sqlite:///")
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER audit_log_no_update")
    con.execute("UPDATE audit_log SET target = 'forged' WHERE seq = 5")
    con.commit()
    con.close()
    row.verify.click()
    qtbot.waitUntil(lambda: row.result.text().startswith("✗"), timeout=20000)
    assert "record 5" in row.result.text()
    other = view.source_rows[ids[1]]
    other.verify.click()
    qtbot.waitUntil(lambda: other.result.text().startswith("✓"), timeout=20000)


def test_unknown_node_answers_with_an_error_not_silence(qtbot, setup):
    view, *_ = setup
    with qtbot.waitSignal(view.verify_done, timeout=10000) as got:
        view.client.verify("no-such-node", view.verify_done.emit)
    assert not got.args[0].ok and "no-such-node" in got.args[0].error


def test_console_actions_land_in_the_operator_log_and_the_view(qtbot, setup, qt_hub):
    from musaops.app.core.operations import DeploySpec

    view, daemons, ids, store = setup
    hub, bridge = qt_hub
    with qtbot.waitSignal(bridge.deploy_event, timeout=20000,
                          check_params_cb=lambda ev: ev.done) as ev:
        hub.deploy(ids[0], DeploySpec(model="no-such-model"))
    assert not ev.args[0].ok

    def logged() -> bool:
        view.source_rows[ids[0]].include.setChecked(False)
        view.source_rows[ids[1]].include.setChecked(False)
        view.action.setCurrentText("node.Deploy")
        view.apply_filters()
        load_all_audit_pages(qtbot, view)
        return any(r.target == "no-such-model" for r in view.model.rows())
    qtbot.waitUntil(logged, timeout=20000)
    row = [r for r in view.model.rows() if r.target == "no-such-model"][0]
    assert (row.source, row.outcome, row.node, row.actor.startswith("console")) == (
        CONSOLE_SOURCE, "failed", "node0", True)
    # the daemon recorded the same action on its side, under its own chain
    assert any(e.target == "no-such-model" and e.outcome == "failed"
               for e in daemons[0].ctx.audit.iter_records())


def test_time_range_filter(qtbot, setup):
    from PySide6.QtCore import QDateTime

    view, daemons, ids, _ = setup
    newest = max(e.time_us for e in daemons[0].ctx.audit.iter_records())
    view.since_on.setChecked(True)
    view.since.setDateTime(QDateTime.fromMSecsSinceEpoch(newest // 1000 + 1000))   # after every record
    view.apply_filters()
    load_all_audit_pages(qtbot, view)
    assert view.model.rowCount() == 0
    view.since.setDateTime(QDateTime.fromMSecsSinceEpoch(0))
    view.until_on.setChecked(True)
    view.until.setDateTime(QDateTime.fromMSecsSinceEpoch(newest // 1000 + 1000))
    view.apply_filters()
    load_all_audit_pages(qtbot, view)
    assert view.model.rowCount() >= 2 * 13
    view.since.setDateTime(QDateTime.fromMSecsSinceEpoch(newest // 1000 + 5000))
    view.apply_filters()
    assert "later" in view.status.text()
