"""The console's picture of a node that stopped answering, of the random demo model and of
repeated errors, against real daemons (tests/app/views_daemon.py) with the demo model
deployed: an offline node's models are marked stale with the time of its last answer in
every view, the demo model is marked wherever its output shows, an error is said once, and
four compare targets fit a 1024 px window (2x2)."""

from __future__ import annotations

import os
import pathlib

import pytest

from musaops.app.core import ConnectionState, NodeAddress
from musaops.app.qt.models.fleet_model import COL_MODELS
from musaops.app.qt.models.models_model import COL_NAME, COL_STATE
from musaops.daemon.demo_model import DEMO_MODEL_NAME, RANDOM_WEIGHTS_NOTICE

from tests.app.conftest import open_main_window
from views_daemon import ThreadDaemon

pytestmark = pytest.mark.timeout(180)
Qt_Tooltip, Qt_Decoration = 3, 1   # Qt.ItemDataRole values, without importing QtCore here


@pytest.fixture
def demo_daemon(demo_model_dir, tmp_path):
    d = ThreadDaemon(demo_model_dir.parent, tmp_path / "state").start()
    d.deploy(DEMO_MODEL_NAME, dtype="float32")
    yield d
    d.stop()


@pytest.fixture
def window(qtbot, qt_hub, demo_daemon):
    w = open_main_window(qtbot, qt_hub, NodeAddress("127.0.0.1", demo_daemon.port, name="demo-node"))
    nid = w.state.node_ids()[0]
    qtbot.waitUntil(lambda: DEMO_MODEL_NAME in w.state.ready_models(nid), timeout=20_000)
    yield w, nid
    w.shutdown()


def _playground(qtbot, w):
    w.show_view("playground")
    pg = w.views["playground"]
    qtbot.waitUntil(lambda: pg.picker.model() == DEMO_MODEL_NAME, timeout=20_000)
    return pg


def _models_view(qtbot, w, nid):
    w.show_view("models")
    view = w.views["models"]
    qtbot.waitUntil(lambda: view.model.row_of(DEMO_MODEL_NAME) >= 0
                    and view.model.entry(view.model.row_of(DEMO_MODEL_NAME)).state == "ready", timeout=20_000)
    return view


def test_an_offline_nodes_data_is_stale_with_the_time_of_its_last_answer(qtbot, window, demo_daemon) -> None:
    w, nid = window
    view = _models_view(qtbot, w, nid)
    row = view.model.row_of(DEMO_MODEL_NAME)
    assert view.model.data(view.model.index(row, COL_STATE)) == "Ready"
    picker = _playground(qtbot, w).picker
    w.show_view("models")
    demo_daemon.stop()
    qtbot.waitUntil(lambda: w.state.status(nid).state is ConnectionState.OFFLINE, timeout=20_000)
    note = w.state.stale_note(nid)
    assert note.startswith("offline · last update ") and note[-8:].count(":") == 2
    # Models view: not a live green "Ready", the last answer with its time.
    qtbot.waitUntil(lambda: view.model.stale == note, timeout=5_000)
    state = view.model.index(row, COL_STATE)
    assert view.model.data(state) == "Ready (stale)"
    assert note in view.model.data(state, Qt_Tooltip)
    assert view.repo_label.text().startswith("Stale: demo-node is offline · last update")
    # Fleet row: the last reported models, marked.
    fleet = w.fleet_view.model
    frow = fleet.index(w.state.node_ids().index(nid), COL_MODELS)
    assert fleet.data(frow) == f"{DEMO_MODEL_NAME} (stale)" and note in fleet.data(frow, Qt_Tooltip)
    # Node view: the charts are the last data.
    w.show_view("node")
    node_view = w.views["node"]
    node_view.show_node(nid)
    assert "Stale" in node_view.facts.text() and note in node_view.facts.text()
    # Playground: the picker says the node's models are its last word.
    assert picker.node_box.currentText() == f"demo-node  ·  stale: {note}"
    tip = picker.model_box.itemData(picker.model_box.currentIndex(), Qt_Tooltip)
    assert note in tip


def test_the_random_demo_model_is_marked_in_models_and_playground(qtbot, window) -> None:
    w, nid = window
    view = _models_view(qtbot, w, nid)
    entry = view.model.entry(view.model.row_of(DEMO_MODEL_NAME))
    assert entry.notice == RANDOM_WEIGHTS_NOTICE           # carried from ModelInfo.notice
    name = view.model.index(view.model.row_of(DEMO_MODEL_NAME), COL_NAME)
    assert view.model.data(name, Qt_Decoration) is not None   # the marker
    assert RANDOM_WEIGHTS_NOTICE in view.model.data(name, Qt_Tooltip)
    pg = _playground(qtbot, w)
    assert pg.notice_banner.isVisible() and "random weights" in pg.notice_banner.text()
    pg.input.setPlainText("hello")
    pg.send()
    qtbot.waitUntil(lambda: not pg.busy(), timeout=30_000)
    assert RANDOM_WEIGHTS_NOTICE in pg.transcript.toPlainText()   # beside the answer it marks
    assert not w.stack.currentWidget().horizontalScrollBar().isVisible()   # nor the stats line
    pg.set_compare(True)
    pg.compare_count.setValue(2)
    pg.panes[1].picker.set_target(nid, DEMO_MODEL_NAME)
    assert "target 1 (tiny-llama), target 2 (tiny-llama)" in pg.notice_banner.text()


def test_an_error_is_said_once(qtbot, window, demo_daemon) -> None:
    w, nid = window
    pg = _playground(qtbot, w)
    demo_daemon.undeploy(DEMO_MODEL_NAME)
    pg.input.setPlainText("hello")
    pg.send()
    qtbot.waitUntil(lambda: not pg.busy(), timeout=30_000)
    error = pg.last_done[next(iter(pg.last_done))].error
    assert error
    shown = [pg.transcript.toPlainText(), pg.stats_label.text(),
             pg.banner.text() if pg.banner.isVisible() else ""]
    assert sum(t.count(error) for t in shown) == 1, shown
    # The status bar names the node once and does not re-post the same message.
    posted: list[str] = []
    w.sb_message.setText = lambda t, orig=w.sb_message.setText: (posted.append(t), orig(t))
    demo_daemon.stop()
    qtbot.waitUntil(lambda: w.state.status(nid).state is ConnectionState.OFFLINE, timeout=20_000)
    qtbot.wait(1500)   # several reconnect attempts, each a status report with the same error
    assert posted and all(p.count("demo-node") == 1 for p in posted), posted
    assert all(a != b for a, b in zip(posted, posted[1:])), posted


def test_four_compare_targets_fit_1024_px(qtbot, window, tmp_path) -> None:
    w, nid = window
    pg = _playground(qtbot, w)
    pg.set_compare(True)
    pg.compare_count.setValue(4)
    qtbot.wait(200)
    page = w.stack.currentWidget()   # the view's scroll area: the page must not scroll sideways
    assert not page.horizontalScrollBar().isVisible(), (pg.width(), page.viewport().width())
    for pane in pg.panes:
        assert pane.isVisible() and pane.width() >= 200, pane.width()
    assert pg.compare_columns() == 2 and pg._columns_shown() == 2
    w.resize(1920, 1080)
    qtbot.waitUntil(lambda: pg._columns_shown() == 4, timeout=5_000)
