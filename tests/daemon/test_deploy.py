"""Node.Deploy / Undeploy of the demo model through the real engine, on a real server."""

from __future__ import annotations

import shutil

import grpc
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import common_pb2, node_pb2, node_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

pytestmark = pytest.mark.timeout(180)
SMALL = dict(max_batch=4, max_context=256, kv_cache_fraction=0.05)


async def _deploy(stub, model=DEMO_MODEL_NAME, **kw):
    return [p async for p in stub.Deploy(node_pb2.DeployRequest(model=model, **{**SMALL, **kw}))]


async def test_deploy_streams_stages_then_ready_and_undeploy_frees(daemon):
    async with daemon.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        stages = await _deploy(stub)
        kinds = [p.stage for p in stages]
        assert kinds[0] == node_pb2.DEPLOY_STAGE_VALIDATING and kinds[-1] == node_pb2.DEPLOY_STAGE_READY, stages[-1]
        order = [node_pb2.DEPLOY_STAGE_VALIDATING, node_pb2.DEPLOY_STAGE_LOADING_WEIGHTS,
                 node_pb2.DEPLOY_STAGE_ALLOCATING_KV_CACHE, node_pb2.DEPLOY_STAGE_WARMING_UP,
                 node_pb2.DEPLOY_STAGE_READY]
        assert sorted(set(kinds), key=order.index) == order
        assert [order.index(k) for k in kinds] == sorted(order.index(k) for k in kinds)
        weights = [p for p in stages if p.stage == node_pb2.DEPLOY_STAGE_LOADING_WEIGHTS]
        assert weights[-1].done_bytes == weights[-1].total_bytes > 0 and weights[-1].fraction == 1.0
        ready = stages[-1]
        assert ready.model.state == common_pb2.MODEL_STATE_READY
        dep = ready.model.deployment
        assert dep.dtype == "float32" and dep.max_batch == 4 and dep.kv_blocks_total > 0 and dep.weights_bytes > 0
        assert dep.ready_unix_ms > 0 and list(dep.device_indices) == [0]

        (m,) = (await stub.ListModels(node_pb2.ListModelsRequest())).models
        assert m.state == common_pb2.MODEL_STATE_READY and m.deployment.kv_cache_bytes > 0

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _deploy(stub)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS

        # telemetry carries the model's engine statistics
        async for snap in telemetry_pb2_grpc.TelemetryStub(ch).Stream(telemetry_pb2.StreamRequest(interval_ms=100)):
            if snap.models:
                assert snap.models[0].model == DEMO_MODEL_NAME
                break

        resp = await stub.Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME, mode=node_pb2.UNDEPLOY_MODE_CANCEL))
        assert resp.freed_bytes == dep.weights_bytes + dep.kv_cache_bytes
        (m,) = (await stub.ListModels(node_pb2.ListModelsRequest())).models
        assert m.state == common_pb2.MODEL_STATE_AVAILABLE and not m.HasField("deployment")

        # and it can be deployed again
        assert (await _deploy(stub))[-1].stage == node_pb2.DEPLOY_STAGE_READY


async def test_max_models_is_resource_exhausted(make_daemon, tmp_path, demo_model_dir):
    repo = tmp_path / "repo"
    for name in ("a", "b"):
        shutil.copytree(demo_model_dir, repo / name)
    d = make_daemon(models_dir=repo, **{"engine.max_models": 1})
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        assert (await _deploy(stub, "a"))[-1].stage == node_pb2.DEPLOY_STAGE_READY
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _deploy(stub, "b")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "engine.max_models" in err.value.details()


async def test_weights_that_do_not_fit_the_model_fail_with_the_reason(make_daemon, tmp_path, demo_model_dir):
    """A checkpoint whose header is sound but whose shapes are wrong: FAILED with a reason, and
    the model shows FAILED until undeployed."""
    import json

    repo = tmp_path / "repo"
    shutil.copytree(demo_model_dir, repo / "wrong")
    cfg = json.loads((repo / "wrong" / "config.json").read_text())
    cfg["intermediate_size"] //= 2  # the MLP weights are twice as wide
    (repo / "wrong" / "config.json").write_text(json.dumps(cfg))
    d = make_daemon(models_dir=repo)
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        last = (await _deploy(stub, "wrong"))[-1]
        assert last.stage == node_pb2.DEPLOY_STAGE_FAILED and last.message
        assert last.model.state == common_pb2.MODEL_STATE_FAILED and last.model.reason == last.message
        await stub.Undeploy(node_pb2.UndeployRequest(model="wrong"))
        (m,) = (await stub.ListModels(node_pb2.ListModelsRequest())).models
        assert m.state == common_pb2.MODEL_STATE_AVAILABLE


async def test_configs_the_engine_cannot_run_are_listed_error_and_refused(make_daemon, tmp_path, demo_model_dir):
    """An unknown architecture, sizes no weight file holds (vocab 10^9, hidden 10^6) and a
    tokenizer.json that is not JSON: ERROR at scan time with the reason, and Deploy is
    FAILED_PRECONDITION with it before anything is allocated."""
    import json

    repo = tmp_path / "repo"
    edits = {"gemma": {"architectures": ["GemmaForCausalLM"]}, "huge": {"vocab_size": 10**9, "hidden_size": 10**6}}
    for name, edit in edits.items():
        shutil.copytree(demo_model_dir, repo / name)
        cfg = json.loads((repo / name / "config.json").read_text())
        (repo / name / "config.json").write_text(json.dumps({**cfg, **edit}))
    shutil.copytree(demo_model_dir, repo / "bad-tokenizer")
    (repo / "bad-tokenizer" / "tokenizer.json").write_text("<html>not json</html>")
    want = {"gemma": "architecture GemmaForCausalLM is not supported by this engine",
            "huge": "but the weight files hold 139,584: its sizes are too large",
            "bad-tokenizer": "tokenizer.json is not valid JSON"}
    d = make_daemon(models_dir=repo)
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        models = {m.name: m for m in (await stub.ListModels(node_pb2.ListModelsRequest())).models}
        for name, words in want.items():
            assert models[name].state == common_pb2.MODEL_STATE_ERROR and words in models[name].reason, models[name]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _deploy(stub, name)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and words in err.value.details()


async def _wait_state(stub, state, model=DEMO_MODEL_NAME):
    import asyncio

    for _ in range(600):
        models = {m.name: m for m in (await stub.ListModels(node_pb2.ListModelsRequest())).models}
        if models[model].state == state:
            return models[model]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{model} never reached {common_pb2.ModelState.Name(state)}")


async def test_cancelling_deploy_returns_the_model_to_available(daemon):
    import asyncio

    async with daemon.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        call = stub.Deploy(node_pb2.DeployRequest(model=DEMO_MODEL_NAME, **SMALL))
        first = await call.read()
        assert first.stage == node_pb2.DEPLOY_STAGE_VALIDATING
        call.cancel()
        await _wait_state(stub, common_pb2.MODEL_STATE_AVAILABLE)
        assert daemon.ctx.deployments.get(DEMO_MODEL_NAME) is None
        from musaops.daemon.trust.audit import AuditFilter

        for _ in range(200):  # the record is written as the cancelled handler unwinds
            cancelled = daemon.ctx.audit.query(AuditFilter(action="node.Deploy", outcome="failed"))
            if cancelled:
                break
            await asyncio.sleep(0.05)
        assert "cancelled" in cancelled[0].error
        # nothing is left behind: a fresh deploy succeeds
        assert (await _deploy(stub))[-1].stage == node_pb2.DEPLOY_STAGE_READY


async def test_undeploy_drains_in_flight_generate_and_everything_is_audited(daemon):
    import asyncio

    from musaops.daemon.trust.audit import AuditFilter
    from musaops.v1 import inference_pb2, inference_pb2_grpc

    async with daemon.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        assert (await _deploy(stub))[-1].stage == node_pb2.DEPLOY_STAGE_READY
        gen = inference_pb2_grpc.InferenceStub(ch).Generate(inference_pb2.GenerateRequest(
            model=DEMO_MODEL_NAME, prompt="Hello",
            sampling=inference_pb2.SamplingParams(max_tokens=120, ignore_eos=True, temperature=0)))
        first = await gen.read()  # the request is running
        assert first.text or first.HasField("result")
        undeploy = asyncio.ensure_future(stub.Undeploy(node_pb2.UndeployRequest(
            model=DEMO_MODEL_NAME, mode=node_pb2.UNDEPLOY_MODE_DRAIN, drain_timeout_ms=60000)))
        results = []
        while (r := await gen.read()) is not grpc.aio.EOF:
            if r.HasField("result"):
                results.append(r)
        resp = await undeploy
    assert results and results[-1].result.finish_reason == inference_pb2.FINISH_REASON_LENGTH
    assert resp.drained_requests == 1 and resp.cancelled_requests == 0 and resp.freed_bytes > 0
    # the model's latency histograms go away with it
    dropped = daemon.ctx.metrics.registry.get_sample_value(
        "musad:e2e_request_latency_seconds_count", {"model": DEMO_MODEL_NAME})
    assert dropped is None  # the series is dropped at undeploy
    actions = [(e.action, e.outcome) for e in daemon.ctx.audit.query(AuditFilter())]
    assert ("node.Deploy", "ok") in actions and ("node.Undeploy", "ok") in actions


async def test_finished_requests_feed_telemetry_percentiles_and_metrics(daemon):
    from musaops.v1 import inference_pb2, inference_pb2_grpc

    async with daemon.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        assert (await _deploy(stub))[-1].stage == node_pb2.DEPLOY_STAGE_READY
        for _ in range(3):
            async for _r in inference_pb2_grpc.InferenceStub(ch).Generate(inference_pb2.GenerateRequest(
                    model=DEMO_MODEL_NAME, prompt="Hi there, how is the network today? " * 4,
                    sampling=inference_pb2.SamplingParams(max_tokens=8, ignore_eos=True, temperature=0))):
                pass
        async for snap in telemetry_pb2_grpc.TelemetryStub(ch).Stream(telemetry_pb2.StreamRequest(interval_ms=100)):
            if snap.models and snap.models[0].requests_total >= 3:
                s = snap.models[0]
                break
    assert s.generation_tokens_total >= 24 and s.prompt_tokens_total > 0
    assert s.prefix_cache_hit_tokens_total >= 2 * 16   # the same prompt twice more: its blocks reused
    assert 0 < s.ttft_p50_ms <= s.ttft_p99_ms and 0 < s.itl_p50_ms <= s.itl_p99_ms and 0 < s.e2e_p50_ms
    reg = daemon.ctx.metrics.registry
    assert reg.get_sample_value("musad:e2e_request_latency_seconds_count", {"model": DEMO_MODEL_NAME}) == 3
    assert reg.get_sample_value("musad:inter_token_latency_seconds_count", {"model": DEMO_MODEL_NAME}) == 21
    assert reg.get_sample_value("musad:generation_tokens_total", {"model": DEMO_MODEL_NAME}) == 24
    assert reg.get_sample_value("musad:num_requests_running", {"model": DEMO_MODEL_NAME}) == 0
    assert reg.get_sample_value("musad:prefix_cache_hit_tokens_total",
                                {"model": DEMO_MODEL_NAME}) == s.prefix_cache_hit_tokens_total
    # every vLLM metric name DESIGN.md lists is served on /metrics, labelled by model
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{daemon.ctx.metrics.port}/metrics", timeout=10).read().decode()
    for name in ("time_to_first_token_seconds_bucket", "inter_token_latency_seconds_bucket",
                 "e2e_request_latency_seconds_bucket", "request_queue_time_seconds_bucket",
                 "num_requests_running", "num_requests_waiting", "kv_cache_usage_perc",
                 "prompt_tokens_total", "generation_tokens_total"):
        assert f'musad:{name}{{' in body and f'model="{DEMO_MODEL_NAME}"' in body, name


def _write_big_checkpoint(out, demo_model_dir, widen: str = ""):
    """A Llama checkpoint of about 200 MB (float32) on the demo tokenizer; `widen` gives one
    tensor a row too many, so loading fails when it reaches it (the norm: after the others)."""
    import json

    import torch
    from safetensors.torch import save_file

    from musaops.daemon.engine import models

    shutil.copytree(demo_model_dir, out)
    (out / "model.safetensors").unlink()
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(hidden_size=1024, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=16,
               num_key_value_heads=4, head_dim=64, tie_word_embeddings=False)
    (out / "config.json").write_text(json.dumps(cfg))
    mc = models.config_from_hf(cfg)
    slots = models.by_hf_name(mc.architecture).weights(mc)
    tensors = {name: torch.full((s.shape[0] + (name == widen), *s.shape[1:]), 0.01) for name, s in slots.items()}
    save_file(tensors, str(out / "model.safetensors"))
    return sum(t.nbytes for t in tensors.values())


@pytest.mark.timeout(300)
async def test_failed_deploys_free_their_memory_at_once(make_daemon, tmp_path, demo_model_dir):
    """A failed Deploy's half-loaded model must be freed when the Deploy ends, by reference
    counting alone (the garbage collector is off here): RSS stays flat over repeated failures,
    whether loading fails in the weights (a tensor of the wrong shape) or after them (no room
    for the KV cache); an undeployed model is freed at once too. Before the fix, the six
    failures kept 1.8 GiB."""
    import gc
    import weakref

    import psutil

    repo = tmp_path / "repo"
    size = _write_big_checkpoint(repo / "wide", demo_model_dir, widen="model.norm.weight")
    _write_big_checkpoint(repo / "big", demo_model_dir)
    d = make_daemon(models_dir=repo)
    proc = psutil.Process()
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)

        async def fail_twice():
            last = (await _deploy(stub, "wide", dtype="float32"))[-1]
            assert last.stage == node_pb2.DEPLOY_STAGE_FAILED and "model.norm.weight" in last.message
            await stub.Undeploy(node_pb2.UndeployRequest(model="wide"))
            last = (await _deploy(stub, "big", dtype="float32", kv_cache_fraction=1e-9))[-1]
            assert last.stage == node_pb2.DEPLOY_STAGE_FAILED and "not enough memory for the KV cache" in last.message
            await stub.Undeploy(node_pb2.UndeployRequest(model="big"))

        await fail_twice()   # imports, thread pools and allocator arenas settle
        gc.collect()
        gc.disable()
        try:
            before = proc.memory_info().rss
            for _ in range(3):
                await fail_twice()
            grown = proc.memory_info().rss - before
            assert (await _deploy(stub, "big", dtype="float32"))[-1].stage == node_pb2.DEPLOY_STAGE_READY
            model = weakref.ref(d.ctx.deployments.get("big").engine.model)
            await stub.Undeploy(node_pb2.UndeployRequest(model="big", mode=node_pb2.UNDEPLOY_MODE_CANCEL))
            assert model() is None, "the undeployed model is still referenced"
        finally:
            gc.enable()
    assert grown < size / 2, f"RSS grew by {grown / 2**20:.0f} MiB over 6 failed deploys of a {size / 2**20:.0f} MiB model"
