"""The Models view with a supervised engine (issue 14): the console deploys engine="vllm"
from the deploy dialog to a real musad whose engines.vllm.python has vLLM, with the typed
option quantization "awq" on a checkpoint that is not AWQ-quantized: vLLM refuses to start
it, and the failed child's last log lines reach the operator in the failure dialog. Needs
.venv-vllm (`make vllm-env`); skips without it."""

from __future__ import annotations

import pathlib
import shutil
import threading

import pytest

from musaops.app.core import DeploymentInfo, ModelEntry, NodeAddress
from musaops.app.qt.bridge import HubBridge
from musaops.app.qt.models.models_model import COL_STATE, deployment_text
from musaops.app.qt.views.failure_dialog import FailureDialog
from musaops.app.qt.views.models_view import ModelsView
from musaops.app.services.node_hub import HubConfig, NodeHub
from views_daemon import ThreadDaemon

REPO = pathlib.Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def test_deployment_text_says_which_engine_serves() -> None:
    builtin = ModelEntry("m", state="ready", deployment=DeploymentInfo("bfloat16", (0,), 8, 2048))
    vllm = ModelEntry("m", state="ready", deployment=DeploymentInfo("bfloat16", (0, 1), 8, 2048, engine="vllm",
                                                                      tensor_parallel_size=2, pid=4242))
    assert deployment_text(builtin).startswith("built-in · bfloat16")
    assert deployment_text(vllm).startswith("vllm tp 2 · bfloat16 · dev 0,1")


def test_failure_dialog_shows_every_line_of_the_reason(qtbot) -> None:
    tail = "\n".join(f"log line {i}" for i in range(40))
    dialog = FailureDialog(ModelEntry("m", state="failed", reason=f"vLLM exited with code 1:\n{tail}"), "node-a")
    qtbot.addWidget(dialog)
    assert dialog.text.toPlainText().endswith("log line 39") and dialog.text.isReadOnly()


@pytest.mark.timeout(420)
@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="needs .venv-vllm (`make vllm-env`)")
def test_console_deploys_vllm_and_shows_the_failed_childs_log_tail(qtbot, demo_model_dir, tmp_path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(demo_model_dir, repo / "long-demo")
    daemon = ThreadDaemon(repo, tmp_path / "state", **{
        "engines.vllm.python": str(VLLM_PYTHON), "engines.vllm.enforce_eager": True,
        "engines.vllm.cpu_kv_cache_gib": 1.0, "engines.vllm.stop_timeout_s": 10.0}).start()
    bridge = HubBridge()
    hub = NodeHub(bridge, HubConfig(telemetry_interval_ms=200, batch_interval_s=0.05))
    hub.start()
    view = ModelsView(hub, bridge)
    qtbot.addWidget(view)
    view.resize(1280, 800)
    view.show()
    try:
        node_id = hub.add_node(NodeAddress("127.0.0.1", daemon.port, name="vllm-node"))
        qtbot.waitUntil(lambda: view.directory.online(node_id) and view.model.row_of("long-demo") >= 0,
                        timeout=30_000)
        view.select_model("long-demo")
        dialog = view.open_deploy_dialog()
        dialog.engine_box.setCurrentIndex(dialog.engine_box.findData("vllm"))
        assert dialog.engine_box.currentData() == "vllm", "GetInfo did not offer vllm"
        dialog.batch_spin.setValue(8)
        dialog.quant_box.setCurrentIndex(dialog.quant_box.findData("awq"))
        [(nid, spec)] = dialog.specs()
        assert spec.engine == "vllm" and spec.tensor_parallel_size == 1 and spec.engine_options.quantization == "awq"
        dialog.reject()
        view.submit_deploy([(nid, spec)])
        row = view.model.row_of("long-demo")
        qtbot.waitUntil(lambda: view.model.entry(view.model.row_of("long-demo")).state == "failed",
                        timeout=300_000)
        entry = view.model.entry(view.model.row_of("long-demo"))
        assert "Last lines of" in entry.reason, entry.reason   # the child's log tail
        index = view.proxy.mapFromSource(view.model.index(row, COL_STATE))
        view._on_double_click(index)
        assert view.failure_dialog is not None and view.failure_dialog.text.toPlainText() == entry.reason
        view.failure_dialog.reject()
    finally:
        view.stop()
        hub.stop()
        daemon.stop()
    assert not any(t.name == "NodeHub" for t in threading.enumerate())
