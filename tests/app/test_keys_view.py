"""The Keys & usage view against two real daemons with auth on (admin tokens in the
connections): create (confirmed, secret shown once and copyable), use the key over HTTP,
usage per hour, top keys and fleet totals across both nodes, CSV export, edit limits and
revoke (each confirmed) as the daemons see them."""

from __future__ import annotations

import csv

import grpc
import httpx
import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMessageBox

from musaops.app.core import NodeAddress
from musaops.app.core.usage import KeyLimits
from musaops.app.qt.views.keys_view import KeysView
from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import node_pb2, node_pb2_grpc

from views_daemon import ThreadDaemon


@pytest.fixture(scope="module")
def daemons(demo_model_dir, tmp_path_factory):
    started = []
    try:
        for i in range(2):
            d = ThreadDaemon(demo_model_dir.parent, tmp_path_factory.mktemp(f"keys{i}"),
                             **{"auth.required": True, "server.http_listen": "127.0.0.1:0"}).start()
            started.append(d)
            d.admin = d.ctx.auth.create("root", "admin")
            with grpc.insecure_channel(d.address) as ch:
                *_, last = node_pb2_grpc.NodeStub(ch).Deploy(
                    node_pb2.DeployRequest(model=DEMO_MODEL_NAME, dtype="float32", max_batch=4, max_context=1024,
                                           kv_cache_fraction=0.05),
                    metadata=(("authorization", f"Bearer {d.admin}"),))
            assert last.stage == node_pb2.DEPLOY_STAGE_READY, last
        yield started
    finally:
        for d in started:
            d.stop()


@pytest.fixture
def console(qtbot, qt_hub, daemons):
    hub, bridge = qt_hub
    view = KeysView(hub, bridge)
    qtbot.addWidget(view)
    view.resize(1280, 800)
    ids = [hub.add_node(NodeAddress("127.0.0.1", d.port, name=f"node-{i}", token=d.admin))
           for i, d in enumerate(daemons)]
    for nid in ids:
        qtbot.waitUntil(lambda: view.directory.online(nid), timeout=20_000)
    view.show()
    qtbot.waitUntil(lambda: all(n in view.keys for n in ids), timeout=20_000)
    yield hub, view, ids


def _yes(qtbot, view) -> None:
    box = view.confirm_box
    assert box is not None and box.isVisible()
    box.button(QMessageBox.StandardButton.Yes).click()


def _chat(d, key: str, tokens: int) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{d.ctx.http.port}/v1/chat/completions",
                      headers={"Authorization": f"Bearer {key}"}, timeout=60,
                      json={"model": DEMO_MODEL_NAME, "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": tokens, "ignore_eos": True})


def test_create_use_limit_and_revoke_a_key(qtbot, console, daemons, tmp_path):
    hub, view, ids = console
    assert [k.name for k in view.visible_keys()] == ["root", "root"]   # All nodes: both nodes' keys

    view.node_box.setCurrentIndex(view.node_box.findData(ids[0]))
    view.create_button.click()
    dlg = view.key_dialog
    dlg.name.setText("team-a")
    dlg.role.setCurrentText("client")
    dlg.rpm.setValue(100)
    dlg.accept()
    # nothing happens before the confirmation; Cancel leaves no key
    view.confirm_box.button(QMessageBox.StandardButton.Cancel).click()
    qtbot.wait(200)
    assert daemons[0].ctx.auth.identity("team-a") is None
    view.create_button.click()
    view.key_dialog.name.setText("team-a")
    view.key_dialog.rpm.setValue(100)
    view.key_dialog.accept()
    _yes(qtbot, view)
    qtbot.waitUntil(lambda: view.secret_dialog is not None, timeout=20_000)
    secret = view.secret_dialog.secret.text()
    assert secret.startswith("musa_") and secret == view.last_secret
    view.secret_dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == secret
    qtbot.waitUntil(lambda: any(k.name == "team-a" for k in view.visible_keys()), timeout=20_000)
    entry = next(k for k in view.visible_keys() if k.name == "team-a")
    assert entry.role == "client" and entry.limits == KeyLimits(rpm=100) and entry.last_used_ms == 0
    assert daemons[0].ctx.auth.identity("team-a").limits.rpm == 100

    # usage on both nodes: team-a on node 0, a key made on node 1 by the daemon's own CLI path
    other = daemons[1].ctx.auth.create("team-b", "client")
    assert _chat(daemons[0], secret, 5).status_code == 200
    assert _chat(daemons[0], secret, 3).status_code == 200
    assert _chat(daemons[1], other, 4).status_code == 200
    view.node_box.setCurrentIndex(view.node_box.findData(""))   # All nodes
    view.refresh_button.click()
    qtbot.waitUntil(lambda: sum(b.completion_tokens for b in view.scoped_buckets()) == 12, timeout=20_000)
    assert "Fleet (2 nodes): 3 requests" in view.totals_label.text()
    assert "12 completion" in view.totals_label.text()
    tops = [view.top_table.item(r, 0).text() for r in range(view.top_table.rowCount())]
    assert tops == ["team-a", "team-b"]
    assert view.top_table.item(0, 3).text() == "8"
    assert sum(view.chart.column_totals()) == sum(b.tokens for b in view.scoped_buckets())
    assert [name for name, _s in view.chart.series] == ["team-a", "team-b"]
    view.stack_box.setCurrentIndex(1)   # by model
    assert [name for name, _s in view.chart.series] == [DEMO_MODEL_NAME]
    qtbot.waitUntil(lambda: next(k for k in view.visible_keys() if k.name == "team-a").last_used_ms > 0,
                    timeout=20_000)

    path = view.export_csv(str(tmp_path / "usage.csv"))
    rows = list(csv.DictReader(open(path)))
    assert {(r["node"], r["key"], r["completion_tokens"]) for r in rows} == {("node-0", "team-a", "8"),
                                                                            ("node-1", "team-b", "4")}

    # only node 1 in scope: its totals
    view.node_box.setCurrentIndex(view.node_box.findData(ids[1]))
    assert view.totals_label.text().startswith("node-1: 1 requests")

    # edit limits: rpm 1 -> the second request in the minute gets 429
    view.node_box.setCurrentIndex(view.node_box.findData(ids[0]))
    view.select_key(ids[0], "team-a")
    assert view.edit_button.isEnabled()
    view.edit_button.click()
    view.key_dialog.rpm.setValue(1)
    view.key_dialog.models.setText(DEMO_MODEL_NAME)
    view.key_dialog.accept()
    _yes(qtbot, view)
    qtbot.waitUntil(lambda: next(k for k in view.visible_keys() if k.name == "team-a").limits.rpm == 1,
                    timeout=20_000)
    assert daemons[0].ctx.auth.identity("team-a").limits == \
        daemons[0].ctx.auth.identity("team-a").limits.__class__(models=(DEMO_MODEL_NAME,), rpm=1)
    assert view.banner.kind == "ok"

    # revoke
    view.select_key(ids[0], "team-a")
    view.revoke_button.click()
    _yes(qtbot, view)
    qtbot.waitUntil(lambda: next(k for k in view.visible_keys() if k.name == "team-a").state == "revoked",
                    timeout=20_000)
    assert not view.revoke_button.isEnabled() or view.selected_key().name != "team-a"
    daemons[0].ctx.auth.refresh()
    assert daemons[0].ctx.auth.identity("team-a") is None


def test_refusals_are_one_sentence(qtbot, console, daemons):
    hub, view, ids = console
    view.node_box.setCurrentIndex(view.node_box.findData(ids[1]))
    view.create_button.click()
    view.key_dialog.name.setText("bad name with spaces")
    view.key_dialog.accept()
    _yes(qtbot, view)
    qtbot.waitUntil(lambda: view.banner.kind == "error", timeout=20_000)
    assert "not valid" in view.banner.text() and "Traceback" not in view.banner.text()


def test_console_key_limits_have_the_protos_fields():
    from musaops.app.core.usage import LIMIT_FIELDS
    from musaops.v1 import keys_pb2

    assert LIMIT_FIELDS == tuple(f.name for f in keys_pb2.KeyLimits.DESCRIPTOR.fields)
