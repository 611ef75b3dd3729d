"""Inference.Generate through a real musad on port 0 with the demo model deployed."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import common_pb2, inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc

pytestmark = pytest.mark.timeout(120)

P = inference_pb2.SamplingParams


@pytest.fixture
def served(make_daemon):
    """A daemon with the demo model deployed and READY (float32 on the CPU)."""
    d = make_daemon(**{"engine.max_tokens": 512, "engine.max_stop_strings": 3})

    async def deploy():
        async with d.channel() as ch:
            events = [e async for e in node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(
                model=DEMO_MODEL_NAME, dtype="float32", max_batch=8, max_context=256))]
        return events

    d.deploy = deploy
    return d


async def _generate(ch, **kw):
    stub = inference_pb2_grpc.InferenceStub(ch)
    texts, result, rid = [], None, ""
    async for r in stub.Generate(inference_pb2.GenerateRequest(model=DEMO_MODEL_NAME, **kw)):
        rid = r.request_id
        if r.HasField("result"):
            result = r.result
        else:
            texts.append(r.text)
    return texts, result, rid


async def test_stream_usage_timings_seed_and_stop(served):
    await served.deploy()
    async with served.channel() as ch:
        texts, res, rid = await _generate(ch, prompt="Hello, world!", request_id="r1",
                                          sampling=P(temperature=0, max_tokens=30, ignore_eos=True))
        assert rid == "r1" and len(texts) > 1
        assert res.finish_reason == inference_pb2.FINISH_REASON_LENGTH
        assert res.usage.completion_tokens == 30 and res.usage.prompt_tokens > 0
        t = res.timings
        assert 0 <= t.queue_ms <= t.ttft_ms <= t.total_ms and t.mean_itl_ms > 0
        full = "".join(texts)
        # stop string spanning two deltas
        k = next(i for i in range(2, len(texts) - 1) if texts[i] and texts[i + 1])
        stop = texts[k][-1] + texts[k + 1][0]
        cut = full.index(stop)
        texts2, res2, _ = await _generate(ch, prompt="Hello, world!",
                                          sampling=P(temperature=0, max_tokens=30, ignore_eos=True, stop=[stop]))
        assert "".join(texts2) == full[:cut]
        assert res2.finish_reason == inference_pb2.FINISH_REASON_STOP and res2.stop == stop
        # seeds: same seed same text, concurrently with other requests
        seeded = dict(prompt="The quick brown fox", sampling=P(temperature=1.0, top_p=0.9, seed=42,
                                                               max_tokens=20, ignore_eos=True))
        a = await _generate(ch, **seeded)
        b, *_ = await asyncio.gather(_generate(ch, **seeded),
                                     *[_generate(ch, prompt="x" * i, sampling=P(max_tokens=10)) for i in range(1, 4)])
        assert "".join(a[0]) == "".join(b[0])
        # chat messages through the template
        texts3, res3, _ = await _generate(ch, messages=[inference_pb2.ChatMessage(role="user", content="hi")],
                                          sampling=P(temperature=0, max_tokens=5))
        assert res3.usage.prompt_tokens > 3


async def test_client_cancel_frees_blocks(served):
    await served.deploy()
    engine = served.ctx.deployments.get(DEMO_MODEL_NAME).engine
    async with served.channel() as ch:
        call = inference_pb2_grpc.InferenceStub(ch).Generate(inference_pb2.GenerateRequest(
            model=DEMO_MODEL_NAME, prompt="Hello", sampling=P(temperature=0, max_tokens=200, ignore_eos=True)))
        n = 0
        async for r in call:
            n += 1
            if n == 3:
                assert engine.stats().kv_blocks_used > 0
                call.cancel()
                break
    await served.until(lambda: engine.stats().kv_blocks_used == 0 and engine.stats().running == 0,
                       "the cancelled request's blocks freed")
    assert engine.stats().generation_tokens_total < 200


@pytest.mark.parametrize("kw, code, words", [
    (dict(prompt=""), grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty"),
    (dict(prompt="hi " * 400), grpc.StatusCode.INVALID_ARGUMENT, "context is 256 tokens"),
    (dict(prompt="hi", sampling=P(max_tokens=513)), grpc.StatusCode.INVALID_ARGUMENT, "at most 512"),
    (dict(prompt="hi", sampling=P(temperature=-0.5)), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
    (dict(prompt="hi", sampling=P(temperature=1.4e-45)), grpc.StatusCode.INVALID_ARGUMENT,
     "temperature must be 0 (greedy) or between 0.01 and 100"),
    (dict(prompt="hi", sampling=P(repetition_penalty=1.4e-45)), grpc.StatusCode.INVALID_ARGUMENT,
     "repetition_penalty must be between 0.01 and 100"),
    (dict(prompt="hi", sampling=P(top_p=0.0)), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
    (dict(prompt="hi", sampling=P(top_p=1.5)), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
    (dict(prompt="hi", sampling=P(top_k=-1)), grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
    (dict(prompt="hi", sampling=P(stop=["a", "b", "c", "d"])), grpc.StatusCode.INVALID_ARGUMENT, "at most 3"),
    (dict(model="nope", prompt="hi"), grpc.StatusCode.NOT_FOUND, "nope"),
])
async def test_bad_input_statuses(served, kw, code, words):
    await served.deploy()
    async with served.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            stub = inference_pb2_grpc.InferenceStub(ch)
            req = dict(model=DEMO_MODEL_NAME)
            req.update(kw)
            async for _ in stub.Generate(inference_pb2.GenerateRequest(**req)):
                pass
    assert err.value.code() == code and words in err.value.details()


async def test_not_deployed_is_failed_precondition(served):
    async with served.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _generate(ch, prompt="hi")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_full_queue_is_resource_exhausted(served):
    await served.deploy()
    dep = served.ctx.deployments.get(DEMO_MODEL_NAME)
    # max_queue 0: every request finds the queue full (a deterministic full queue)
    object.__setattr__(dep.engine.spec, "max_queue", 0)
    async with served.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _generate(ch, prompt="hi")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry after" in err.value.details()


async def test_generate_is_audited_with_hash_not_prompt(served):
    import hashlib
    import json

    await served.deploy()
    async with served.channel() as ch:
        await _generate(ch, prompt="secret words", request_id="aud-1", sampling=P(temperature=0, max_tokens=4))
        with pytest.raises(grpc.aio.AioRpcError):
            await _generate(ch, prompt="", request_id="aud-2")
    records = await served.audit_records("inference.Generate", 2)
    ok, bad = sorted(records, key=lambda r: json.loads(r.params_json)["request_id"])
    params = json.loads(ok.params_json)
    assert ok.outcome == "ok" and ok.target == DEMO_MODEL_NAME
    assert params["prompt_sha256"] == hashlib.sha256(b"secret words").hexdigest()
    assert params["completion_tokens"] == 4 and params["finish_reason"] == "length"
    assert "prompt" not in params and "secret" not in ok.params_json
    assert bad.outcome == "failed" and "prompt is empty" in bad.error



async def test_store_prompts_keeps_the_prompt_in_the_audit_record(make_daemon):
    import json

    d = make_daemon(**{"audit.store_prompts": True})
    async with d.channel() as ch:
        async for _ in node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(
                model=DEMO_MODEL_NAME, dtype="float32", max_batch=2, max_context=128)):
            pass
        await _generate(ch, prompt="keep me", sampling=P(temperature=0, max_tokens=2))
    records = await d.audit_records("inference.Generate", 1)
    assert json.loads(records[0].params_json)["prompt"] == "keep me"


async def test_cancelled_generate_is_counted_with_its_prompt(served):
    """A Generate cancelled mid-stream: its usage row and audit record hold the prompt's
    token count, as a finished request with the same prompt reports it."""
    import json

    import sqlalchemy as sa

    from musaops.daemon.usage import usage_requests

    await served.deploy()
    prompt = "Once upon a time there was a small daemon that counted every token"
    async with served.channel() as ch:
        _, res, _ = await _generate(ch, prompt=prompt, request_id="whole", sampling=P(temperature=0, max_tokens=2))
        prompt_tokens = res.usage.prompt_tokens
        assert prompt_tokens > 10
        call = inference_pb2_grpc.InferenceStub(ch).Generate(inference_pb2.GenerateRequest(
            model=DEMO_MODEL_NAME, prompt=prompt, request_id="left",
            sampling=P(temperature=0, max_tokens=200, ignore_eos=True)))
        n = 0
        async for _ in call:
            n += 1
            if n == 3:
                call.cancel()
                break
    records = await served.audit_records("inference.Generate", 2)
    params = {p["request_id"]: p for p in (json.loads(r.params_json) for r in records)}
    assert params["left"]["finish_reason"] == "cancelled"
    assert params["left"]["prompt_tokens"] == params["whole"]["prompt_tokens"] == prompt_tokens
    assert 0 < params["left"]["completion_tokens"] < 200

    def rows():
        with served.ctx.usage.engine.connect() as conn:
            c = usage_requests.c
            return conn.execute(sa.select(c.outcome, c.prompt_tokens, c.completion_tokens)).all()
    await served.until(lambda: len(rows()) == 2, "both usage rows")
    by_outcome = {r[0]: r for r in rows()}
    assert by_outcome["cancelled"][1:] == (prompt_tokens, params["left"]["completion_tokens"])
    assert by_outcome["ok"][1] == prompt_tokens


async def test_generate_cancelled_before_its_first_token_is_aborted_and_recorded(make_daemon):
    """A client that leaves while its request still waits in the queue: the request leaves the
    engine's queue, and its audit record and usage row say cancelled."""
    import json

    d = make_daemon(**{"engine.max_tokens": 512})
    async with d.channel() as ch:
        [e async for e in node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(
            model=DEMO_MODEL_NAME, dtype="float32", max_batch=1, max_context=256))]
        engine = d.ctx.deployments.get(DEMO_MODEL_NAME).engine
        stub = inference_pb2_grpc.InferenceStub(ch)
        running = stub.Generate(inference_pb2.GenerateRequest(
            model=DEMO_MODEL_NAME, prompt="a", request_id="running",
            sampling=P(temperature=0, max_tokens=240, ignore_eos=True)))
        await running.read()   # it holds the only batch slot
        waiting = stub.Generate(inference_pb2.GenerateRequest(
            model=DEMO_MODEL_NAME, prompt="b", request_id="queued", sampling=P(max_tokens=4)))
        await d.until(lambda: engine.stats().waiting == 1, "the second request queued")
        waiting.cancel()
        await d.until(lambda: engine.stats().waiting == 0, "the cancelled request leaving the queue")
        running.cancel()
    records = await d.audit_records("inference.Generate", 2)
    params = {p["request_id"]: p for p in (json.loads(r.params_json) for r in records)}
    assert params["queued"]["finish_reason"] == "cancelled" and params["queued"]["completion_tokens"] == 0
