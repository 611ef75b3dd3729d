"""The Playground against real daemons with the demo model deployed: streamed output and
stats, Stop cancels the RPC and the daemon frees the request, compare mode with two
targets, the copied snippet runs, presets persist through the console's store."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from musaops.app.core import NodeAddress
from musaops.app.qt.bridge import HubBridge
from musaops.app.qt.views.playground_view import PlaygroundView, parse_stops, format_stops
from musaops.app.services.store import Store, StoreWorker
from musaops.daemon.demo_model import DEMO_MODEL_NAME

from views_daemon import ThreadDaemon

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def daemons(demo_model_dir, tmp_path_factory):
    started = []
    try:
        for i in range(2):
            http = {"server.http_listen": "127.0.0.1:0"} if i == 1 else {}   # node 0 serves no HTTP
            d = ThreadDaemon(demo_model_dir.parent, tmp_path_factory.mktemp(f"pg{i}"), **http).start()
            started.append(d)
            d.deploy(DEMO_MODEL_NAME, dtype="float32")
        yield started
    finally:
        for d in started:
            d.stop()


@pytest.fixture
def store(tmp_path):
    worker = StoreWorker(Store(tmp_path / "console.db"))
    yield worker
    worker.close()
    assert not any(t.name.startswith("console-store") for t in threading.enumerate())


@pytest.fixture
def console(qtbot, qt_hub, daemons, store):
    hub, bridge = qt_hub
    view = PlaygroundView(hub, bridge, store=store)
    qtbot.addWidget(view)
    view.resize(1280, 800)
    view.show()
    ids = [hub.add_node(NodeAddress("127.0.0.1", d.port, name=f"node-{i}")) for i, d in enumerate(daemons)]
    for nid in ids:
        qtbot.waitUntil(lambda: DEMO_MODEL_NAME in view.directory.ready_models(nid), timeout=20_000)
    yield hub, view, ids
    view.stop()


def _running(daemon) -> int:
    stats = daemon.engine_stats()[DEMO_MODEL_NAME]
    return stats.running + stats.waiting


def test_generate_streams_into_the_transcript_with_stats(qtbot, console) -> None:
    hub, view, ids = console
    # The pickers choose a node and its deployed model without help.
    assert view.picker.node_id() in ids and view.picker.model() == DEMO_MODEL_NAME
    view.picker.set_target(ids[0], DEMO_MODEL_NAME)
    view.system_edit.setPlainText("You are terse.")
    view.temperature.setValue(0.0)
    view.max_tokens.setValue(24)
    view.ignore_eos.setChecked(True)
    view.input.setPlainText("Hello there")
    [stream_id] = view.send()
    assert view.stop_button.isEnabled() and not view.send_button.isEnabled()
    qtbot.waitUntil(lambda: stream_id in view.last_done, timeout=30_000)
    done = view.last_done[stream_id]
    assert done.finish_reason == "length", done
    assert done.usage.completion_tokens == 24 and done.usage.prompt_tokens > 0
    text = view.transcript.toPlainText()
    assert "Hello there" in text and "You\n" in text
    assert view.history[-1].role == "assistant" and view.history[-1].content
    assert view.history[-1].content in text  # the streamed text is what the transcript shows
    stats = view.stats_label.text()
    assert "completion 24 tok" in stats and "TTFT" in stats and "tok/s" in stats and "length" in stats
    assert view.send_button.isEnabled() and not view.stop_button.isEnabled()

    # A second turn sends the history: system, user, assistant, user.
    spec = view.build_spec(DEMO_MODEL_NAME, "And again?")
    assert [m.role for m in spec.messages] == ["system", "user", "assistant", "user"]


def test_stop_cancels_the_rpc_and_the_daemon_frees_the_request(qtbot, console, daemons) -> None:
    hub, view, ids = console
    view.picker.set_target(ids[0], DEMO_MODEL_NAME)
    view.max_tokens.setValue(4000)
    view.ignore_eos.setChecked(True)
    view.input.setPlainText("Tell me a very long story")
    [stream_id] = view.send()
    # Wait until tokens stream and the daemon reports the request running.
    qtbot.waitUntil(lambda: "Streaming" in view.stats_label.text(), timeout=30_000)
    assert _running(daemons[0]) == 1
    view.stop_button.click()
    qtbot.waitUntil(lambda: stream_id in view.last_done, timeout=30_000)
    done = view.last_done[stream_id]
    assert done.finish_reason == "cancelled"
    assert "cancelled" in view.stats_label.text()
    # The daemon has dropped the request and freed its KV blocks.
    qtbot.waitUntil(lambda: _running(daemons[0]) == 0, timeout=30_000)
    qtbot.waitUntil(lambda: daemons[0].engine_stats()[DEMO_MODEL_NAME].kv_blocks_used == 0, timeout=30_000)
    # ... and its telemetry says so to the console too.
    qtbot.waitUntil(lambda: next(m for m in view.directory.latest[ids[0]].models
                                 if m.model == DEMO_MODEL_NAME).running == 0, timeout=10_000)
    assert view.send_button.isEnabled()


def test_stop_right_after_send_still_ends_the_stream(qtbot, console) -> None:
    """Stop before the hub even started the RPC: the stream still ends (cancelled), once."""
    hub, view, ids = console
    ends = []
    view.picker.set_target(ids[0], DEMO_MODEL_NAME)
    for _ in range(5):
        view.input.setPlainText("quick")
        [stream_id] = view.send()
        view.stop()
        qtbot.waitUntil(lambda: stream_id in view.last_done, timeout=10_000)
        ends.append(view.last_done[stream_id].finish_reason)
        assert view.send_button.isEnabled() and not view.streams
    assert set(ends) <= {"cancelled", "length", "stop"} and "cancelled" in ends


def test_compare_mode_streams_one_prompt_to_two_targets(qtbot, console) -> None:
    hub, view, ids = console
    view.set_compare(True)
    view.compare_count.setValue(2)
    view.panes[0].picker.set_target(ids[0], DEMO_MODEL_NAME)
    view.panes[1].picker.set_target(ids[1], DEMO_MODEL_NAME)
    view.temperature.setValue(0.0)
    view.max_tokens.setValue(16)
    view.ignore_eos.setChecked(True)
    view.input.setPlainText("Compare me")
    ids_sent = view.send()
    assert len(ids_sent) == 2 and view.pages.currentIndex() == 1
    qtbot.waitUntil(lambda: all(s in view.last_done for s in ids_sent), timeout=30_000)
    outputs = [p.output.toPlainText() for p in view.panes[:2]]
    assert all(outputs)
    # Same seedless greedy request on the same checkpoint: the two nodes agree.
    assert outputs[0] == outputs[1]
    for pane in view.panes[:2]:
        assert "completion 16 tok" in pane.stats.text() and "TTFT" in pane.stats.text()
    assert not view.panes[2].isVisibleTo(view)


def _ask_for_12_greedy_tokens(view, node_id) -> None:
    view.picker.set_target(node_id, DEMO_MODEL_NAME)
    view.temperature.setValue(0.0)
    view.max_tokens.setValue(12)
    view.ignore_eos.setChecked(True)
    view.input.setPlainText("Write one line")


def _run_snippet(script, text: str) -> tuple[int, str, str]:
    """Runs a copied snippet as its own Python process (no token in its environment)."""
    script.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "MUSA_OPS_TOKEN"}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60, env=env)
    return run.returncode, run.stdout.decode(), run.stderr.decode()


def _console_answer(qtbot, view) -> str:
    """Sends the view's request and returns the answer once it is done."""
    [stream_id] = view.send()
    qtbot.waitUntil(lambda: stream_id in view.last_done, timeout=30_000)
    return view.history[-1].content


def test_copied_snippet_runs_against_the_daemon(qtbot, console, daemons, tmp_path) -> None:
    hub, view, ids = console
    _ask_for_12_greedy_tokens(view, ids[1])
    text = view.copy_snippet()
    assert text and view.banner.kind == "ok"
    returncode, stdout, stderr = _run_snippet(tmp_path / "snippet.py", text)
    assert returncode == 0, stderr
    assert "completion_tokens=12" in stderr and "finish=FINISH_REASON_LENGTH" in stderr
    # The console sends the same request: the same greedy answer comes back.
    assert stdout == _console_answer(qtbot, view) + "\n"


def test_copy_as_openai_and_curl_use_the_nodes_http_address(qtbot, console, daemons, tmp_path) -> None:
    hub, view, ids = console
    _ask_for_12_greedy_tokens(view, ids[1])
    view.picker.set_target(ids[0], DEMO_MODEL_NAME)
    assert view.copy_snippet("openai") == "" and view.banner.kind == "warning"
    assert "does not serve the OpenAI-compatible HTTP API" in view.banner.text()
    view.picker.set_target(ids[1], DEMO_MODEL_NAME)
    labels = [a.text() for a in view.copy_button.menu().actions()]
    assert labels == ["Python (gRPC)", "Python (OpenAI client)", "curl"]
    port = daemons[1].ctx.http.port
    curl = view.copy_snippet("curl")
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in curl and view.banner.kind == "ok"
    text = view.copy_snippet("openai")
    assert f"BASE_URL = 'http://127.0.0.1:{port}/v1'" in text
    returncode, stdout, stderr = _run_snippet(tmp_path / "snippet_openai.py", text)
    assert returncode == 0, stderr
    assert "completion_tokens=12" in stderr
    assert stdout == _console_answer(qtbot, view) + "\n"


def test_presets_persist_through_the_store(qtbot, console, store, daemons) -> None:
    hub, view, ids = console
    view.system_edit.setPlainText("Pirate voice.")
    view.temperature.setValue(1.3)
    view.top_k.setValue(40)
    view.seed_check.setChecked(True)
    view.seed.setValue(7)
    view.stop_edit.setPlainText("END\\n")
    view.save_preset_button.click()  # asks for a name, without blocking
    dialog = view.preset_dialog
    dialog.setTextValue("pirate")
    dialog.accept()
    assert view.preset_box.currentText() == "pirate"
    # A fresh view reads it back from SQLite (through the store's worker thread).
    other = PlaygroundView(hub, HubBridge(), store=store)
    qtbot.addWidget(other)
    qtbot.waitUntil(lambda: "pirate" in other.presets, timeout=30_000)
    assert other.load_preset("pirate")
    assert other.system_edit.toPlainText() == "Pirate voice."
    assert other.temperature.value() == pytest.approx(1.3)
    assert other.top_k.value() == 40 and other.seed_check.isChecked() and other.seed.value() == 7
    assert other.sampling().stop == ("END\n",)
    other.delete_preset("pirate")
    third = PlaygroundView(hub, HubBridge(), store=store)
    qtbot.addWidget(third)
    qtbot.wait(200)  # give the store's worker its turn, then check nothing came back
    qtbot.waitUntil(lambda: store.submit("list_presets", "playground").result() == [], timeout=30_000)


def test_sending_without_a_deployed_model_explains_itself(qtbot, console) -> None:
    hub, view, ids = console
    view.picker.model_box.clear()
    view.input.setPlainText("hi")
    assert view.send() == []
    assert view.banner.kind == "warning" and "deploy one in Models" in view.banner.text()


def test_stop_sequences_round_trip_escapes() -> None:
    stops = parse_stops("END\n\\n\\n\n\\tTAB")
    assert stops == ("END", "\n\n", "\tTAB")
    assert parse_stops(format_stops(stops)) == stops


def test_a_refused_request_shows_the_daemons_sentence_and_keeps_history_clean(qtbot, console) -> None:
    hub, view, ids = console
    view.picker.set_target(ids[0], DEMO_MODEL_NAME)
    # The node's limit bounds the max tokens box.
    assert view.max_tokens.maximum() == 4096
    before = list(view.history)
    view.stop_edit.setPlainText("\n".join(f"stop{i}" for i in range(40)))  # over max_stop_strings
    view.input.setPlainText("hi")
    [stream_id] = view.send()
    qtbot.waitUntil(lambda: stream_id in view.last_done, timeout=20_000)
    assert view.last_done[stream_id].finish_reason == "error"
    assert view.banner.kind == "error" and "stop" in view.banner.text().lower()
    assert "INVALID_ARGUMENT" in view.banner.text() or "at most" in view.banner.text()
    assert "Traceback" not in view.banner.text()
    assert view.history == before and view.send_button.isEnabled()
