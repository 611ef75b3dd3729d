"""A vLLM deployment's restart policy in the console: the deploy dialog's "Restarts after a
crash" box, and the alerts when a deployed model goes FAILED (a crashed engine child) or was
restarted after a crash (AlertEngine.on_models, from ListModels answers)."""

from __future__ import annotations

from musaops.app.core.alerts import AlertEngine
from musaops.app.core.operations import DeployEvent, DeploymentInfo, ModelEntry
from musaops.app.qt.views.deploy_dialog import DeployDialog
from test_deploy_engines import _node


def _ready(restarts: int = 0) -> ModelEntry:
    return ModelEntry("llama", state="ready", deployment=DeploymentInfo(engine="vllm", restarts=restarts,
                                                                        max_restarts=2))


def test_a_failed_model_alerts_until_it_leaves_failed_and_a_restart_warns() -> None:
    alerts = AlertEngine()
    assert not alerts.on_models("n1", (_ready(),), now=1.0)
    crashed = ModelEntry("llama", state="failed", reason="vLLM exited with status -9")
    assert alerts.on_models("n1", (crashed,), now=2.0)
    (a,) = alerts.alerts
    assert (a.kind, a.severity) == ("model_failed", "critical") and "exited with status -9" in a.message
    assert not alerts.on_models("n1", (crashed,), now=3.0)   # one condition, one alert
    assert alerts.on_models("n1", (_ready(restarts=1),), now=4.0)
    (a,) = alerts.alerts
    assert (a.kind, a.severity) == ("model_restarted", "warning") and "(1 of 2 allowed)" in a.message


def test_a_failed_deploy_is_not_alerted_twice() -> None:
    alerts = AlertEngine()
    alerts.on_deploy_event(DeployEvent("op", "n1", "llama", "failed", message="no memory", done=True, ok=False))
    alerts.on_models("n1", (ModelEntry("llama", state="failed", reason="no memory"),))
    assert [a.kind for a in alerts.alerts] == ["deploy_failed"]


def test_the_dialog_sends_the_restart_policy_only_when_set(qtbot) -> None:
    dialog = DeployDialog([_node("a")], node_id="a", model="llama-8b")
    qtbot.addWidget(dialog)
    dialog.engine_box.setCurrentIndex(dialog.engine_box.findData("vllm"))
    assert dialog.restarts_spin.text() == "node default" and dialog.spec().max_restarts is None
    dialog.restarts_spin.setValue(0)
    assert dialog.spec().max_restarts == 0
    dialog.restarts_spin.setValue(99)   # clamped to the daemon's range
    assert dialog.spec().max_restarts == 10
    dialog.engine_box.setCurrentIndex(dialog.engine_box.findData("builtin"))
    assert dialog.spec().max_restarts is None   # the built-in engine refuses one
