"""The Models view's repository actions against two real daemons: Add model… (upload a
folder, free space shown beside each node, progress row to done), Copy to nodes… (node to
node), Delete with confirmation, and a refused upload shown on its row."""

from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from tests.app.conftest import connect_models_node
from views_daemon import ThreadDaemon

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def two(tmp_path, demo_model_dir):
    repos = [tmp_path / "a", tmp_path / "b"]
    for r in repos:
        r.mkdir()
    started = [ThreadDaemon(r, tmp_path / f"state-{r.name}").start() for r in repos]
    yield started, repos
    for d in started:
        d.stop()


def _has(view, node_id, name):
    return any(m.name == name for m in view.directory.models(node_id))


def test_add_copy_delete(qtbot, models_console, two, demo_model_dir, tmp_path) -> None:
    hub, bridge, view = models_console
    (a, b), (repo_a, repo_b) = two
    na = connect_models_node(qtbot, hub, view, a, "node-a")
    nb = connect_models_node(qtbot, hub, view, b, "node-b")
    view.select_node(na)

    # Add model…: a folder to node-a; each node's free space appears beside it
    dialog = view.open_add_dialog()
    assert dialog is not None and view.add_button.isEnabled()
    qtbot.waitUntil(lambda: all("free" in dialog.nodes.item(i).text() for i in range(dialog.nodes.count())),
                    timeout=10_000)
    dialog.accept()   # nothing picked: refused in the dialog with a sentence
    assert dialog.isVisible() and "Pick a model folder" in dialog.error.text()
    dialog.path_edit.setText(str(demo_model_dir))
    assert dialog.name_edit.text() == demo_model_dir.name and "to upload" in dialog.size_label.text()
    dialog.name_edit.setText("uploaded")
    dialog.accept()
    assert len(view.transfer_rows) == 1
    row = next(iter(view.transfer_rows.values()))
    qtbot.waitUntil(lambda: row.finished, timeout=60_000)
    assert row.bar.value() == 1000 and "in the repository" in row.detail.text(), row.detail.text()
    assert (repo_a / "uploaded" / "config.json").read_bytes() == (demo_model_dir / "config.json").read_bytes()
    qtbot.waitUntil(lambda: _has(view, na, "uploaded"), timeout=10_000)   # the table follows
    row.button.click()   # Dismiss
    assert not view.transfer_rows

    # Copy to nodes…: node-a -> node-b, node to node
    view.select_model("uploaded")
    assert view.copy_button.isEnabled() and view.delete_button.isEnabled()
    dialog = view.open_copy_dialog()
    assert dialog.source_box.currentData() == na
    for i in range(dialog.targets.count()):
        item = dialog.targets.item(i)
        if item.data(Qt.ItemDataRole.UserRole) == nb:
            item.setCheckState(Qt.CheckState.Checked)
    dialog.accept()
    row = next(iter(view.transfer_rows.values()))
    qtbot.waitUntil(lambda: row.finished, timeout=60_000)
    assert row.bar.value() == 1000, row.detail.text()
    assert (repo_b / "uploaded" / "config.json").is_file()
    qtbot.waitUntil(lambda: _has(view, nb, "uploaded"), timeout=10_000)
    row.button.click()

    # Delete with confirmation: Cancel keeps it, Delete removes it
    view.select_model("uploaded")
    box = view.ask_delete()
    assert "uploaded" in box.text() and "cannot be undone" in box.informativeText()
    box.button(QMessageBox.StandardButton.Cancel).click()
    assert not view.transfer_rows and (repo_a / "uploaded").exists()
    view.select_model("uploaded")
    box = view.ask_delete()
    next(b for b in box.buttons() if b.text() == "Delete").click()
    row = next(iter(view.transfer_rows.values()))
    qtbot.waitUntil(lambda: row.finished, timeout=30_000)
    assert not (repo_a / "uploaded").exists() and "deleted" in row.detail.text()
    qtbot.waitUntil(lambda: not _has(view, na, "uploaded"), timeout=10_000)


def test_a_refused_upload_is_shown_on_its_row(qtbot, models_console, two, demo_model_dir, tmp_path) -> None:
    hub, bridge, view = models_console
    (a, _), (repo_a, _) = two
    na = connect_models_node(qtbot, hub, view, a, "node-a")
    view.select_node(na)
    shutil.copytree(demo_model_dir, repo_a / "taken")
    ops = view.submit_import(str(demo_model_dir), "taken", [na])
    row = view.transfer_rows[ops[0]]
    qtbot.waitUntil(lambda: row.finished, timeout=30_000)
    assert "already holds" in row.detail.text() and row.button.text() == "Dismiss"



def test_gguf_quantization_is_shown(qtbot) -> None:
    """ListModels' quantization reaches the table beside the architecture."""
    from musaops.app.qt.models.models_model import COL_ARCH, ModelsTableModel
    from musaops.app.services import convert
    from musaops.v1 import node_pb2

    entries = [convert.model_entry(node_pb2.ModelInfo(name="smol.gguf", architecture="LlamaForCausalLM",
                                                      quantization="Q4_1")),
               convert.model_entry(node_pb2.ModelInfo(name="plain", architecture="LlamaForCausalLM"))]
    model = ModelsTableModel()
    model.set_entries(entries)
    text = {model.entry(r).name: model.data(model.index(r, COL_ARCH)) for r in range(model.rowCount())}
    assert text == {"smol.gguf": "LlamaForCausalLM · Q4_1", "plain": "LlamaForCausalLM"}
