"""Hostile input against a real musad on port 0: every RPC gets a clear status and a sentence.

Each test sends malformed or extreme requests (empty, huge, path-like and NUL-laden names,
out-of-range and NaN numbers, unknown enum values, duplicate devices, too many stop strings,
concurrent Deploys, Undeploy while loading) and checks the status code DESIGN.md names, that
the message is a short human sentence (a huge echoed input would overflow gRPC's trailer
limit and arrive as a different error), and that the daemon keeps serving afterwards.
"""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import common_pb2, inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc, telemetry_pb2, \
    telemetry_pb2_grpc

pytestmark = pytest.mark.timeout(120)

SMALL = dict(max_batch=4, max_context=256, kv_cache_fraction=0.05)
U32_MAX, U64_MAX = 2**32 - 1, 2**64 - 1
HUGE_NAME = "m" * 200_000
BAD_NAMES = ["../etc", "/abs", "/etc/passwd", "..", ".", f"{DEMO_MODEL_NAME}/../{DEMO_MODEL_NAME}",
             f"./{DEMO_MODEL_NAME}", "a\x00b", f"{DEMO_MODEL_NAME}\x00", " ", "\u202e", HUGE_NAME]
Code = grpc.StatusCode


def assert_refused(err: grpc.aio.AioRpcError, code: grpc.StatusCode, *words: str) -> None:
    """`err` carries `code` and a short sentence (mentioning `words`, case-insensitive)."""
    details = err.details() or ""
    assert err.code() == code, (err.code(), details[:300])
    assert 10 <= len(details) <= 1000 and len(details.split()) >= 3, details[:300]
    for w in words:
        assert w.lower() in details.lower(), (w, details)


async def refused(call, code: grpc.StatusCode, *words: str) -> str:
    """Awaits a unary call or drains a stream; asserts it ends with `code`; returns the details."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    assert_refused(info.value, code, *words)
    return info.value.details()


async def assert_serving(ch) -> None:
    health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    info = await node_pb2_grpc.NodeStub(ch).GetInfo(node_pb2.GetInfoRequest())
    assert info.api_version == "v1"


async def _deploy(stub, model=DEMO_MODEL_NAME, **kw):
    return [p async for p in stub.Deploy(node_pb2.DeployRequest(model=model, **{**SMALL, **kw}))]


async def _states(stub) -> dict[str, int]:
    return {m.name: m.state for m in (await stub.ListModels(node_pb2.ListModelsRequest())).models}


async def _wait_state(stub, state, model=DEMO_MODEL_NAME):
    for _ in range(1200):
        if (await _states(stub)).get(model) == state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{model} never reached {common_pb2.ModelState.Name(state)}: {await _states(stub)}")


# -- Node.Deploy ------------------------------------------------------------------------------


async def test_deploy_refuses_bad_names_and_parameters(daemon):
    async with daemon.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        await refused(stub.Deploy(node_pb2.DeployRequest(model="")), Code.INVALID_ARGUMENT, "model")
        for name in BAD_NAMES:
            await refused(stub.Deploy(node_pb2.DeployRequest(model=name)), Code.NOT_FOUND, "no model")
        bad = [
            dict(dtype="int8"), dict(dtype="float32\x00"), dict(dtype="x" * 100_000),
            dict(device_indices=[1]), dict(device_indices=[U32_MAX]), dict(device_indices=[0, 0]),
            dict(device_indices=[0] * 100_000),
            dict(kv_cache_fraction=math.nan), dict(kv_cache_fraction=math.inf),
            dict(kv_cache_fraction=-math.inf), dict(kv_cache_fraction=-0.5), dict(kv_cache_fraction=0.96),
            dict(kv_cache_fraction=1.0), dict(kv_cache_fraction=1e38),
            dict(max_batch=U32_MAX), dict(max_context=U32_MAX), dict(max_context=1),
        ]
        for fields in bad:
            req = node_pb2.DeployRequest(model=DEMO_MODEL_NAME, **{**SMALL, **fields})
            await refused(stub.Deploy(req), Code.INVALID_ARGUMENT)
        # nothing was registered by the refusals
        assert (await _states(stub)) == {DEMO_MODEL_NAME: common_pb2.MODEL_STATE_AVAILABLE}
        assert daemon.ctx.deployments.all() == []
        await assert_serving(ch)


async def test_concurrent_deploys_of_one_model_give_one_ready_and_already_exists(daemon):
    async with daemon.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)

        async def one():
            try:
                return (await _deploy(stub))[-1].stage
            except grpc.aio.AioRpcError as err:
                assert_refused(err, Code.ALREADY_EXISTS, "already")
                return "exists"

        outcomes = await asyncio.gather(*(one() for _ in range(12)))
        assert outcomes.count(node_pb2.DEPLOY_STAGE_READY) == 1 and outcomes.count("exists") == 11, outcomes
        await assert_serving(ch)
        await stub.Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME, mode=node_pb2.UNDEPLOY_MODE_CANCEL))
        assert (await _states(stub)) == {DEMO_MODEL_NAME: common_pb2.MODEL_STATE_AVAILABLE}


# -- Node.Undeploy ----------------------------------------------------------------------------


async def test_undeploy_refuses_bad_requests(daemon):
    async with daemon.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        await refused(stub.Undeploy(node_pb2.UndeployRequest(model="")), Code.INVALID_ARGUMENT, "model")
        for name in BAD_NAMES:
            await refused(stub.Undeploy(node_pb2.UndeployRequest(model=name)), Code.NOT_FOUND, "no model")
        await refused(stub.Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME)),
                      Code.FAILED_PRECONDITION, "not deployed")
        await refused(stub.Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME, mode=99)),
                      Code.INVALID_ARGUMENT, "mode")
        await refused(stub.Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME, mode=-1)),
                      Code.INVALID_ARGUMENT, "mode")
        await assert_serving(ch)


# -- Telemetry.Stream -------------------------------------------------------------------------


async def test_telemetry_intervals_out_of_range_and_huge_backfill(daemon):
    async with daemon.channel() as ch:
        stub = telemetry_pb2_grpc.TelemetryStub(ch)
        for ms in (1, 99, 60001, U32_MAX):
            await refused(stub.Stream(telemetry_pb2.StreamRequest(interval_ms=ms)), Code.INVALID_ARGUMENT,
                          "interval_ms")
        # 0 means the default; a huge backfill is capped at the ring: history first, then live
        for req in (telemetry_pb2.StreamRequest(interval_ms=0),
                    telemetry_pb2.StreamRequest(interval_ms=100, backfill_seconds=U32_MAX)):
            call = stub.Stream(req)
            async for snap in call:
                if not snap.backfill:
                    assert snap.host.memory_total_bytes > 0
                    break
            call.cancel()
        await assert_serving(ch)


async def test_cancelled_streams_leave_no_subscriber_behind(daemon):
    sampler = daemon.ctx.telemetry
    async with daemon.channel() as ch:
        stub = telemetry_pb2_grpc.TelemetryStub(ch)
        calls = [stub.Stream(telemetry_pb2.StreamRequest(interval_ms=100, backfill_seconds=60)) for _ in range(20)]
        for c in calls:
            await c.read()
        for c in calls:
            c.cancel()
        for _ in range(500):
            if not daemon.call(_count_subs(sampler)):
                break
            await asyncio.sleep(0.02)
        assert daemon.call(_count_subs(sampler)) == 0
        await assert_serving(ch)


async def _count_subs(sampler) -> int:
    return sampler.subscriber_count


async def test_too_many_streams_is_resource_exhausted(daemon, monkeypatch):
    from musaops.daemon.services import telemetry as telemetry_service

    monkeypatch.setattr(telemetry_service, "MAX_STREAMS", 3)
    async with daemon.channel() as ch:
        stub = telemetry_pb2_grpc.TelemetryStub(ch)
        calls = [stub.Stream(telemetry_pb2.StreamRequest(interval_ms=100)) for _ in range(3)]
        for c in calls:
            await c.read()
        await refused(stub.Stream(telemetry_pb2.StreamRequest()), Code.RESOURCE_EXHAUSTED, "retry")
        calls.pop().cancel()
        await daemon.until(lambda: daemon.call(_count_subs(daemon.ctx.telemetry)) < 3, "a stream closed")
        again = stub.Stream(telemetry_pb2.StreamRequest(interval_ms=100))
        assert (await again.read()).host.memory_total_bytes > 0
        for c in (*calls, again):
            c.cancel()
        await assert_serving(ch)


# -- Inference.Generate -----------------------------------------------------------------------


def _gen(model=DEMO_MODEL_NAME, prompt="Hello", **sampling):
    return inference_pb2.GenerateRequest(model=model, prompt=prompt,
                                         sampling=inference_pb2.SamplingParams(**sampling))


async def test_generate_refuses_bad_models(daemon):
    async with daemon.channel() as ch:
        stub = inference_pb2_grpc.InferenceStub(ch)
        await refused(stub.Generate(_gen(model="")), Code.INVALID_ARGUMENT, "model")
        for name in BAD_NAMES:
            await refused(stub.Generate(_gen(model=name)), Code.NOT_FOUND, "no model")
        await refused(stub.Generate(_gen()), Code.FAILED_PRECONDITION, "deploy")
        await assert_serving(ch)


async def test_generate_refuses_bad_sampling_and_prompts(daemon):
    async with daemon.channel() as ch:
        node = node_pb2_grpc.NodeStub(ch)
        assert (await _deploy(node))[-1].stage == node_pb2.DEPLOY_STAGE_READY
        stub = inference_pb2_grpc.InferenceStub(ch)
        bad_sampling = [
            dict(temperature=math.nan), dict(temperature=math.inf), dict(temperature=-1.0),
            dict(top_p=math.nan), dict(top_p=0.0), dict(top_p=1.5), dict(top_p=-math.inf),
            dict(top_k=-1), dict(top_k=-(2**31)),
            dict(repetition_penalty=math.nan), dict(repetition_penalty=0.0), dict(repetition_penalty=math.inf),
            dict(frequency_penalty=math.nan), dict(frequency_penalty=3.0), dict(presence_penalty=-math.inf),
            dict(max_tokens=U32_MAX), dict(max_tokens=4097),
            dict(stop=["x"] * 10_000), dict(stop=[""]), dict(stop=["ok", ""]), dict(stop=["z" * 10_000]),
        ]
        for sp in bad_sampling:
            await refused(stub.Generate(_gen(**sp)), Code.INVALID_ARGUMENT)
        await refused(stub.Generate(_gen(prompt="")), Code.INVALID_ARGUMENT, "prompt")
        both = _gen()
        both.messages.add(role="user", content="hi")
        await refused(stub.Generate(both), Code.INVALID_ARGUMENT)
        odd_role = inference_pb2.GenerateRequest(model=DEMO_MODEL_NAME)
        odd_role.messages.add(role="root\x00", content="hi")
        await refused(stub.Generate(odd_role), Code.INVALID_ARGUMENT, "role")
        # longer than the deployment's 256-token context
        await refused(stub.Generate(_gen(prompt="word " * 2000)), Code.INVALID_ARGUMENT, "context")
        await assert_serving(ch)

        # extreme but valid: NUL bytes in the prompt, the largest seed, the longest stop string
        for req in (_gen(prompt="a\x00b\x00", max_tokens=4, temperature=0),
                    _gen(max_tokens=4, seed=U64_MAX, temperature=0.7),
                    _gen(max_tokens=4, stop=["z" * 256], temperature=0)):
            items = [r async for r in stub.Generate(req)]
            assert items[-1].HasField("result"), items[-1]
            assert items[-1].result.finish_reason in (inference_pb2.FINISH_REASON_STOP,
                                                      inference_pb2.FINISH_REASON_LENGTH), items[-1]
        await assert_serving(ch)


# -- corrupt bytes on the wire ----------------------------------------------------------------

CORRUPT = (b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x02\xc3\x28")  # bad tag, bad length, bad UTF-8


@pytest.mark.parametrize("method, streaming", [
    ("/musaops.v1.Node/GetInfo", False), ("/musaops.v1.Node/ListModels", False),
    ("/musaops.v1.Node/Undeploy", False), ("/musaops.v1.Node/Deploy", True),
    ("/musaops.v1.Telemetry/Stream", True), ("/musaops.v1.Inference/Generate", True),
    ("/musaops.v1.Audit/Query", True),
])
async def test_corrupt_request_bytes_are_invalid_argument(daemon, method, streaming):
    """Used to be UNKNOWN 'Unexpected <class DecodeError>'."""
    async with daemon.channel() as ch:
        raw = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
        for payload in CORRUPT:
            if method.endswith(("GetInfo", "ListModels", "Stream", "Query")) and payload == CORRUPT[2]:
                continue  # these request types have no string field 1: the bytes are valid (unknown field)
            call = ch.unary_stream(method, **raw)(payload) if streaming else ch.unary_unary(method, **raw)(payload)
            await refused(call, Code.INVALID_ARGUMENT, "not a valid protobuf message")
        await assert_serving(ch)


async def test_full_queue_is_resource_exhausted_with_retry_advice(make_daemon):
    d = make_daemon(**{"engine.max_queue": 1})
    async with d.channel() as ch:
        deployed = await _deploy(node_pb2_grpc.NodeStub(ch), max_batch=1, max_context=2048)
        assert deployed[-1].stage == node_pb2.DEPLOY_STAGE_READY
        stub = inference_pb2_grpc.InferenceStub(ch)
        long = _gen(max_tokens=2000, ignore_eos=True, temperature=0)  # runs until cancelled
        running = stub.Generate(long)
        await running.read()  # holds the only running slot
        waiting = stub.Generate(long)
        engine = d.ctx.deployments.get(DEMO_MODEL_NAME).engine
        for _ in range(1000):  # until the second request is queued
            if engine.stats().waiting >= 1:
                break
            await asyncio.sleep(0.01)
        assert engine.stats().waiting == 1 and engine.stats().running == 1
        await refused(stub.Generate(long), Code.RESOURCE_EXHAUSTED, "retry")
        for call in (running, waiting):
            call.cancel()
        await assert_serving(ch)


async def test_corrupt_bytes_from_an_unknown_caller_are_unauthenticated_first(make_daemon):
    """The decode check runs after auth: a stranger learns nothing about request formats."""
    d = make_daemon(**{"auth.required": True})
    async with d.channel() as ch:
        raw = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
        await refused(ch.unary_unary("/musaops.v1.Node/GetInfo", **raw)(CORRUPT[0]), Code.UNAUTHENTICATED)
        await refused(ch.unary_stream("/musaops.v1.Node/Deploy", **raw)(CORRUPT[2]), Code.UNAUTHENTICATED)
