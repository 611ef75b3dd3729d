"""Node view charts against a real daemon: device and model curves fill from telemetry
(back-filled on connect), time window, pause, hover read-out."""

from __future__ import annotations

import pytest

from musaops.app.core import ConnectionState, DeploySpec, GenerateSpec, Sampling

pytestmark = pytest.mark.timeout(180)


def _points(view, chart: str) -> int:
    return max((0 if c.item.xData is None else len(c.item.xData))
               for c in view.panel._curves[chart]) if view.panel._curves[chart] else 0


def test_device_charts_fill_and_window_and_pause(qtbot, node_view) -> None:
    hub, bridge, state, view, nid = node_view
    assert view.node_id == nid
    qtbot.waitUntil(lambda: _points(view, "mem") >= 3, timeout=20_000)
    assert "Devices:" in view.facts.text() and view.state_label.text() == "Online"
    # Window: the x range follows the choice.
    view.window_combo.setCurrentText("1 min")
    (x0, x1), _ = view.panel._plots["mem"].vb.viewRange()
    assert x1 - x0 == pytest.approx(60, rel=0.05)
    # Pause: redraws stop (the frame counter stands still) until resumed.
    view.pause_button.setChecked(True)
    frames = view.panel.frames
    view.panel.redraw()
    assert view.panel.frames == frames and view.pause_button.text() == "Resume"
    view.pause_button.setChecked(False)
    assert view.panel.frames > frames
    # Hover read-out over the memory chart.
    plot = view.panel._plots["mem"]
    center = plot.sceneBoundingRect().center()
    with qtbot.waitSignal(view.panel.readout, timeout=5000) as sig:
        view.panel._on_mouse(center)
    assert "Memory" in sig.args[0] and "#0" in sig.args[0]


def test_model_charts_show_latency_after_a_request(qtbot, node_view) -> None:
    hub, bridge, state, view, nid = node_view
    qtbot.waitUntil(lambda: state.statuses[nid].state is ConnectionState.ONLINE, timeout=20_000)
    with qtbot.waitSignal(bridge.deploy_event, timeout=120_000,
                          check_params_cb=lambda e: e.done) as deployed:
        hub.deploy(nid, DeploySpec("tiny-llama", dtype="float32", max_batch=4, max_context=256))
    assert deployed.args[0].ok, deployed.args[0].message
    with qtbot.waitSignal(bridge.generation_done, timeout=60_000) as done:
        hub.generate(nid, GenerateSpec("tiny-llama", prompt="Hello",
                                       sampling=Sampling(max_tokens=8, temperature=0.0)))
    assert done.args[0].ok, done.args[0].error
    # Per-model curves appear (TTFT p50/p95/p99, ITL, tokens/s, running/waiting) and the
    # TTFT of the finished request shows up in the chart's data.
    qtbot.waitUntil(lambda: len(view.panel._curves["ttft"]) == 3, timeout=20_000)
    labels = [c.label for c in view.panel._curves["ttft"]]
    assert labels == ["tiny-llama p50", "tiny-llama p95", "tiny-llama p99"]

    def ttft_seen():
        c = view.panel._curves["ttft"][0]
        return c.item.yData is not None and len(c.item.yData) and float(max(c.item.yData)) > 0
    qtbot.waitUntil(ttft_seen, timeout=20_000)
    assert {c.label for c in view.panel._curves["queue"]} == {"tiny-llama running",
                                                              "tiny-llama waiting"}
