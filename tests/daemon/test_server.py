"""A real musad on port 0: health, reflection, and every Node / Telemetry RPC."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import common_pb2, node_pb2, node_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

pytestmark = pytest.mark.timeout(120)


async def test_health_reports_serving_for_every_service(daemon):
    async with daemon.channel() as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "musaops.v1.Node", "musaops.v1.Telemetry"):
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_reflection_lists_the_four_services(daemon):
    async with daemon.channel() as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        async for resp in call:
            names = {s.name for s in resp.list_services_response.service}
            break
    assert {"musaops.v1.Node", "musaops.v1.Telemetry", "musaops.v1.Inference", "musaops.v1.Audit",
            "grpc.health.v1.Health"} <= names


async def test_get_info(daemon):
    async with daemon.channel() as ch:
        info = await node_pb2_grpc.NodeStub(ch).GetInfo(node_pb2.GetInfoRequest())
    assert info.api_version == "v1" and info.backend == common_pb2.BACKEND_CPU
    assert len(info.devices) == 1 and info.devices[0].memory_total_bytes > 0
    assert info.limits.max_models == 4 and info.limits.max_tokens == 4096
    assert info.host_cpu_count > 0 and info.host_memory_total_bytes > 0
    assert info.started_unix_ms > 0 and info.python_version and not info.tls


async def test_list_models_shows_the_demo_model(daemon):
    async with daemon.channel() as ch:
        resp = await node_pb2_grpc.NodeStub(ch).ListModels(node_pb2.ListModelsRequest())
    (m,) = resp.models
    assert m.name == DEMO_MODEL_NAME and m.state == common_pb2.MODEL_STATE_AVAILABLE
    assert m.architecture == "LlamaForCausalLM" and m.parameters > 0 and m.num_layers == 2
    assert {e.dtype for e in m.memory_estimates} == {"bfloat16", "float16", "float32"}
    assert resp.repository == daemon.config.models.dir


async def test_list_models_rescans_and_reports_broken_folders(make_daemon, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    d = make_daemon(models_dir=repo)
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        assert not (await stub.ListModels(node_pb2.ListModelsRequest())).models
        (repo / "broken").mkdir()
        (repo / "broken" / "config.json").write_text("{")
        (m,) = (await stub.ListModels(node_pb2.ListModelsRequest())).models
    assert m.state == common_pb2.MODEL_STATE_ERROR and "config.json is not valid JSON" in m.reason


@pytest.mark.parametrize("request_kwargs, code, words", [
    (dict(model="nope"), grpc.StatusCode.NOT_FOUND, "no model named 'nope'"),
    (dict(model=""), grpc.StatusCode.INVALID_ARGUMENT, "model` is empty"),
    (dict(model=DEMO_MODEL_NAME, dtype="int3"), grpc.StatusCode.INVALID_ARGUMENT, "dtype 'int3'"),
    (dict(model=DEMO_MODEL_NAME, device_indices=[7]), grpc.StatusCode.INVALID_ARGUMENT, "no device with index 7"),
    (dict(model=DEMO_MODEL_NAME, kv_cache_fraction=0.99), grpc.StatusCode.INVALID_ARGUMENT, "kv_cache_fraction"),
    (dict(model=DEMO_MODEL_NAME, max_context=100000), grpc.StatusCode.INVALID_ARGUMENT, "max_position_embeddings"),
    (dict(model=DEMO_MODEL_NAME, max_batch=100000), grpc.StatusCode.INVALID_ARGUMENT, "max_batch"),
])
async def test_deploy_validation_errors(daemon, request_kwargs, code, words):
    async with daemon.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(**request_kwargs)):
                pass
    assert err.value.code() == code and words in err.value.details()


async def test_deploy_of_a_broken_model_is_failed_precondition(make_daemon, tmp_path, demo_model_dir):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(demo_model_dir, repo / "cut")
    data = (repo / "cut" / "model.safetensors").read_bytes()
    (repo / "cut" / "model.safetensors").write_bytes(data[:-10])
    d = make_daemon(models_dir=repo)
    async with d.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(model="cut")):
                pass
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "truncated" in err.value.details()


@pytest.mark.parametrize("model, code", [("nope", grpc.StatusCode.NOT_FOUND),
                                         (DEMO_MODEL_NAME, grpc.StatusCode.FAILED_PRECONDITION)])
async def test_undeploy_of_what_is_not_deployed(daemon, model, code):
    async with daemon.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await node_pb2_grpc.NodeStub(ch).Undeploy(node_pb2.UndeployRequest(model=model))
    assert err.value.code() == code and model in err.value.details()


async def test_undeploy_bad_mode(daemon):
    async with daemon.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await node_pb2_grpc.NodeStub(ch).Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME, mode=9))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("interval", [1, 99, 60001])
async def test_telemetry_bad_interval(daemon, interval):
    async with daemon.channel() as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in telemetry_pb2_grpc.TelemetryStub(ch).Stream(telemetry_pb2.StreamRequest(interval_ms=interval)):
                pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and str(interval) in err.value.details()


async def test_telemetry_stream_backfill_then_live(daemon):
    sampler = daemon.ctx.telemetry
    # wait (without sleeping on wall time assertions) until the ring holds two samples
    async with daemon.channel() as ch:
        stub = telemetry_pb2_grpc.TelemetryStub(ch)
        warm = stub.Stream(telemetry_pb2.StreamRequest(interval_ms=100))
        async for _ in warm:
            if len(sampler.history) >= 2:
                break
        warm.cancel()
        got = []
        call = stub.Stream(telemetry_pb2.StreamRequest(interval_ms=100, backfill_seconds=600))
        async for snap in call:
            got.append(snap)
            if not snap.backfill and sum(not s.backfill for s in got) >= 3:
                break
        call.cancel()
    backfill = [s for s in got if s.backfill]
    live = [s for s in got if not s.backfill]
    assert len(backfill) >= 2 and got[: len(backfill)] == backfill  # backfill comes first
    times = [s.time_unix_ms for s in got]
    assert times == sorted(times)
    for s in live:
        assert s.host.memory_total_bytes > 0 and len(s.devices) == 1
        assert s.devices[0].HasField("memory_used_bytes")


def test_metrics_endpoint_serves_device_gauges(daemon):
    import time

    deadline = time.monotonic() + 30
    while daemon.ctx.telemetry.latest is None and time.monotonic() < deadline:
        time.sleep(0.05)
    body = urllib.request.urlopen(f"http://127.0.0.1:{daemon.ctx.metrics.port}/metrics", timeout=10).read().decode()
    assert 'musad:device_memory_total_bytes{device="0"' in body
    assert "# TYPE musad:time_to_first_token_seconds histogram" in body
