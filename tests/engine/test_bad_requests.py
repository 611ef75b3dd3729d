"""Oversized and degenerate requests against the engine and a real musad on port 0.

A long prompt must be refused (or tokenised) without stalling the daemon's event loop;
unbounded fields are capped; huge names are cut short in errors and the audit log; load
errors and a cancelled drain leave a clear sentence and a consistent engine.
"""

from __future__ import annotations

import asyncio
import json
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.daemon.engine import load_engine
from musaops.daemon.engine.api import (DeviceTarget, EngineSpec, GenerationRequest, LoadError,
                                       SamplingParams)
from musaops.v1 import inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc

pytestmark = pytest.mark.timeout(120)

P = inference_pb2.SamplingParams
Code = grpc.StatusCode


@pytest.fixture
def served(make_daemon):
    d = make_daemon()
    d.call(_deploy(d))
    return d


async def _deploy(d, **kw):
    fields = dict(model=DEMO_MODEL_NAME, dtype="float32", max_batch=4, max_context=256)
    fields.update(kw)
    async with d.channel() as ch:
        return [e async for e in node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(**fields))]


async def _refused(ch, code: Code, *words: str, **kw) -> str:
    kw.setdefault("model", DEMO_MODEL_NAME)
    stub = inference_pb2_grpc.InferenceStub(ch)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.Generate(inference_pb2.GenerateRequest(**kw)):
            pass
    details = err.value.details() or ""
    assert err.value.code() == code, (err.value.code(), details[:300])
    assert 10 <= len(details) <= 1000 and len(details.split()) >= 3, details[:300]
    for w in words:
        assert w.lower() in details.lower(), (w, details)
    return details


async def _healthy(ch) -> bool:
    resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_huge_prompt_and_too_many_messages_refused_while_daemon_answers(served):
    async with served.channel() as ch:
        refusal, healthy = await asyncio.gather(
            _refused(ch, Code.INVALID_ARGUMENT, "characters", "context", prompt="x" * 2_000_000),
            _healthy(ch))
        assert healthy and "2,000,000" in refusal
        many = [inference_pb2.ChatMessage(role="user", content="hi")] * 5000
        await _refused(ch, Code.INVALID_ARGUMENT, "chat messages", "at most", messages=many)
        # a long chat within the message cap but beyond the context: refused by its size
        long_chat = [inference_pb2.ChatMessage(role="user", content="y" * 10_000)] * 4
        await _refused(ch, Code.INVALID_ARGUMENT, "characters", messages=long_chat)
        assert await _healthy(ch)


async def test_tokenising_runs_off_the_event_loop(served):
    """While a prompt is being tokenised, other RPCs still answer: tokenize is held on a gate
    that opens only after a health check has come back (on the loop, this would deadlock)."""
    engine = served.ctx.deployments.get(DEMO_MODEL_NAME).engine
    entered, gate = threading.Event(), threading.Event()
    real = engine.tokenize

    def held(req):
        entered.set()
        gate.wait(30)
        return real(req)

    engine.tokenize = held
    try:
        async with served.channel() as ch:
            stub = inference_pb2_grpc.InferenceStub(ch)
            call = stub.Generate(inference_pb2.GenerateRequest(
                model=DEMO_MODEL_NAME, prompt="Hello there", sampling=P(temperature=0, max_tokens=3)))
            first = asyncio.ensure_future(call.read())
            assert await asyncio.to_thread(entered.wait, 30)
            assert await _healthy(ch)
            assert not gate.is_set()  # the health check answered while tokenisation was held
            gate.set()
            msg = await first
            while msg is not grpc.aio.EOF and not msg.HasField("result"):
                msg = await call.read()
            assert msg is not grpc.aio.EOF and msg.result.usage.completion_tokens == 3
    finally:
        gate.set()
        del engine.tokenize


async def test_request_id_and_stop_strings_are_capped(served):
    async with served.channel() as ch:
        await _refused(ch, Code.INVALID_ARGUMENT, "request_id", "128", prompt="hi", request_id="r" * 100_000)
        await _refused(ch, Code.INVALID_ARGUMENT, "stop string", "256", prompt="hi",
                       sampling=P(max_tokens=2, stop=["s" * 10_000]))
        # at the caps they are accepted
        stub = inference_pb2_grpc.InferenceStub(ch)
        rids = {r.request_id async for r in stub.Generate(inference_pb2.GenerateRequest(
            model=DEMO_MODEL_NAME, prompt="hi", request_id="r" * 128,
            sampling=P(max_tokens=2, stop=["s" * 256])))}
        assert rids == {"r" * 128}


async def test_huge_model_name_is_cut_short_in_error_and_audit(served):
    name = "m" * 200_000
    async with served.channel() as ch:
        details = await _refused(ch, Code.NOT_FOUND, "200000 characters", model=name, prompt="hi")
        assert name not in details
        await _refused(ch, Code.INVALID_ARGUMENT, "request_id", model=name, prompt="hi",
                       request_id="r" * 100_000)
    records = await served.audit_records("inference.Generate", 2)
    assert len(records) == 2
    for rec in records:
        assert len(rec.target) < 200 and "200000 characters" in rec.target
        assert len(json.loads(rec.params_json)["request_id"]) < 200
        assert rec.outcome == "failed"


async def test_tiny_kv_cache_fraction_fails_with_sizes_and_advice(make_daemon):
    d = make_daemon()
    events = await _deploy(d, kv_cache_fraction=1e-12)
    last = events[-1]
    assert last.stage == node_pb2.DEPLOY_STAGE_FAILED
    msg = last.message
    assert "raise kv_cache_fraction" in msg and "1e-12" in msg and "bytes" in msg, msg
    assert "9.99999" not in msg and "less 0" not in msg, msg


def test_load_errors_name_the_field(llama_dir):
    base = dict(dtype="float32", max_batch=2, max_context=64, kv_cache_fraction=0.01)
    with pytest.raises(LoadError, match=r"max_context is 1; it must be at least 2"):
        load_engine(llama_dir, EngineSpec(**{**base, "max_context": 1}), DeviceTarget("cpu"))
    with pytest.raises(LoadError, match=r"max_batch is 0"):
        load_engine(llama_dir, EngineSpec(**{**base, "max_batch": 0}), DeviceTarget("cpu"))


async def test_cancelled_drain_leaves_the_engine_admitting(llama_dir):
    engine = load_engine(llama_dir, EngineSpec(dtype="float32", max_batch=2, max_context=512,
                                               kv_cache_fraction=0.01), DeviceTarget("cpu"))
    try:
        long = SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)
        stream = engine.generate(GenerationRequest("busy", prompt="Hello", sampling=long))
        await stream.__anext__()  # the request is running
        drain = asyncio.ensure_future(engine.drain(timeout_s=60))
        await asyncio.sleep(0.05)
        drain.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drain
        await stream.aclose()
        # still deployed, so new requests are admitted and run to the end
        short = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
        items = [i async for i in engine.generate(GenerationRequest("after", prompt="Hi", sampling=short))]
        assert items[-1].metrics.completion_tokens == 3
        # a drain that completes still closes admission
        assert await engine.drain(timeout_s=5) == (0, 0)
        from musaops.daemon.engine.api import EngineClosedError
        with pytest.raises(EngineClosedError):
            await engine.generate(GenerationRequest("late", prompt="Hi", sampling=short)).__anext__()
    finally:
        engine.close()
