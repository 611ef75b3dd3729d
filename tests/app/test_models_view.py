"""The Models view against real daemons: repository, deploy with stages, undeploy with
confirmation, one model to two nodes at once, and errors shown inline."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox

from musaops.app.core import DeploySpec, NodeAddress
from musaops.app.qt.models.models_model import COL_DEPLOYMENT, COL_STATE
from musaops.app.qt.views.deploy_progress import STAGES
from musaops.daemon.demo_model import DEMO_MODEL_NAME

from tests.app.conftest import connect_models_node
from views_daemon import ThreadDaemon

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def daemons(demo_model_dir, tmp_path_factory):
    started = [ThreadDaemon(demo_model_dir.parent, tmp_path_factory.mktemp(f"state{i}")).start()
               for i in range(2)]
    yield started
    for d in started:
        d.stop()


def _state(view, model):
    row = view.model.row_of(model)
    return view.model.entry(row).state if row >= 0 else None


def test_repository_deploy_with_stages_then_undeploy(qtbot, models_console, daemons) -> None:
    hub, bridge, view = models_console
    daemon = daemons[0]
    node_id = connect_models_node(qtbot, hub, view, daemon, "node-a")
    view.select_node(node_id)
    qtbot.waitUntil(lambda: _state(view, DEMO_MODEL_NAME) == "available", timeout=10_000)
    assert "1 model" in view.repo_label.text()
    assert view.model.data(view.model.index(view.model.row_of(DEMO_MODEL_NAME), COL_STATE)) == "Available"

    # Deploy through the dialog: the memory check passes on this host, so Deploy is enabled.
    view.select_model(DEMO_MODEL_NAME)
    stages: list[str] = []
    bridge.deploy_event.connect(lambda e: stages.append(e.stage))
    dialog = view.open_deploy_dialog()
    assert dialog is not None and dialog.model_box.currentText() == DEMO_MODEL_NAME
    qtbot.waitUntil(dialog.deploy_button.isEnabled, timeout=5_000)
    dialog.dtype_box.setCurrentText("float32")
    dialog.accept()
    assert len(view.rows) == 1
    row = next(iter(view.rows.values()))
    # Each connection gets its own queued delivery: wait for both the row and the recorder.
    qtbot.waitUntil(lambda: row.done and stages[-1:] in (["ready"], ["failed"]), timeout=60_000)
    assert row.ok, row.detail.text()
    assert row.bar.value() == 100 and row.detail.text().startswith("Ready")
    assert stages[0] == "validating" and stages[-1] == "ready"
    assert {"loading_weights", "allocating_kv_cache", "warming_up"} <= set(stages)
    assert [s for s in STAGES if s in stages] == list(STAGES)  # in the daemon's order
    qtbot.waitUntil(lambda: _state(view, DEMO_MODEL_NAME) == "ready", timeout=10_000)
    assert "float32" in view.model.data(view.model.index(view.model.row_of(DEMO_MODEL_NAME), COL_DEPLOYMENT))

    # Undeploy asks first; answering Cancel leaves the model deployed.
    view.select_model(DEMO_MODEL_NAME)
    assert view.undeploy_button.isEnabled()
    box = view.ask_undeploy()
    box.button(QMessageBox.StandardButton.Cancel).click()
    assert daemon.engine_stats().get(DEMO_MODEL_NAME) is not None
    box = view.ask_undeploy()
    undeploy = next(b for b in box.buttons() if b.text() == "Undeploy")
    undeploy.click()
    qtbot.waitUntil(lambda: view.banner.kind == "ok", timeout=30_000)
    assert "undeployed" in view.banner.text()
    qtbot.waitUntil(lambda: _state(view, DEMO_MODEL_NAME) == "available", timeout=10_000)
    assert DEMO_MODEL_NAME not in daemon.engine_stats()


def test_one_model_to_two_nodes_with_per_node_progress(qtbot, models_console, daemons) -> None:
    hub, bridge, view = models_console
    ids = [connect_models_node(qtbot, hub, view, d, f"gpu-{i}") for i, d in enumerate(daemons)]
    for nid in ids:  # the dialog needs each node's repository
        hub.refresh_models(nid)
    qtbot.waitUntil(lambda: all(view.directory.models(n) for n in ids), timeout=10_000)
    dialog = view.open_deploy_dialog()
    for i in range(dialog.nodes_tree.topLevelItemCount()):
        dialog.nodes_tree.topLevelItem(i).setCheckState(0, dialog.nodes_tree.topLevelItem(i).checkState(0).Checked)
    assert sorted(n for n, _ in dialog.specs()) == sorted(ids)
    assert dialog.deploy_button.isEnabled(), dialog.summary.text()
    dialog.accept()
    assert len(view.rows) == 2
    qtbot.waitUntil(lambda: all(r.done for r in view.rows.values()), timeout=90_000)
    assert all(r.ok for r in view.rows.values()), [r.detail.text() for r in view.rows.values()]
    titles = sorted(r.title.text() for r in view.rows.values())
    assert "gpu-0" in titles[0] and "gpu-1" in titles[1]
    for d in daemons:
        assert DEMO_MODEL_NAME in d.engine_stats()
        d.undeploy(DEMO_MODEL_NAME)
    # Dismiss clears the finished rows.
    for row in list(view.rows.values()):
        row.button.click()
    assert not view.rows and view.ops_hint.isVisibleTo(view)


def test_deploying_a_deployed_model_fails_with_the_daemons_reason(qtbot, models_console, daemons) -> None:
    hub, bridge, view = models_console
    daemon = daemons[0]
    daemon.deploy(DEMO_MODEL_NAME)
    try:
        node_id = connect_models_node(qtbot, hub, view, daemon, "node-a")
        [op] = view.submit_deploy([(node_id, DeploySpec(DEMO_MODEL_NAME))])
        row = view.rows[op]
        qtbot.waitUntil(lambda: row.done, timeout=20_000)
        assert not row.ok and row.detail.text().startswith("Failed:")
        assert view.banner.kind == "error" and DEMO_MODEL_NAME in view.banner.text()
        assert "Traceback" not in view.banner.text()
    finally:
        daemon.undeploy(DEMO_MODEL_NAME)


def test_cancel_ends_the_deploy_and_the_row_says_what_the_node_ended_with(qtbot, models_console, daemons) -> None:
    hub, bridge, view = models_console
    daemon = daemons[1]
    node_id = connect_models_node(qtbot, hub, view, daemon, "node-b")
    view.select_node(node_id)
    [op] = view.submit_deploy([(node_id, DeploySpec(DEMO_MODEL_NAME, dtype="float32"))])
    row = view.rows[op]
    row.button.click()  # Cancel at once: cancels the Deploy RPC, even before it got going
    qtbot.waitUntil(lambda: row.done, timeout=30_000)
    assert not row.ok and row.detail.text().startswith("Cancelled")
    # The view re-reads the repository until the node settles, then says how it ended.
    qtbot.waitUntil(lambda: _state(view, DEMO_MODEL_NAME) in ("available", "failed", "ready"), timeout=60_000)
    qtbot.waitUntil(lambda: op not in view._cancelled, timeout=10_000)
    if _state(view, DEMO_MODEL_NAME) == "ready":  # the cancel lost the race with the last step
        assert "is deployed" in row.detail.text()
        daemon.undeploy(DEMO_MODEL_NAME)
    else:
        assert "freed what it had loaded" in row.detail.text()
        assert DEMO_MODEL_NAME not in daemon.engine_stats()


def test_unreachable_node_is_explained_where_the_operator_looks(qtbot, models_console) -> None:
    hub, bridge, view = models_console
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node_id = hub.add_node(NodeAddress("127.0.0.1", port, name="ghost"))
    qtbot.waitUntil(lambda: view.directory.status(node_id) is not None
                    and view.directory.status(node_id).state.value == "offline", timeout=20_000)
    view.select_node(node_id)
    qtbot.waitUntil(lambda: "ghost is offline" in view.empty_label.text(), timeout=5_000)
    assert view.empty_label.isVisibleTo(view)
    assert not view.refresh_button.isEnabled() and not view.deploy_button.isEnabled()
    assert view.open_deploy_dialog() is None and "No node is online" in view.banner.text()
