"""Deploy / Undeploy / shutdown interleavings that used to leave a model stuck or an engine running.

Each test drives the real engine on the demo model through a real server and forces the
interleaving by waiting for a state, never by timing.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.daemon.deployments import DeployRequest, Stage, State
from musaops.v1 import common_pb2, inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc

pytestmark = pytest.mark.timeout(120)
SMALL = dict(max_batch=4, max_context=2048, kv_cache_fraction=0.05)


async def _deploy(stub):
    return [p async for p in stub.Deploy(node_pb2.DeployRequest(model=DEMO_MODEL_NAME, **SMALL))]


def _long_generate(ch):
    """A request that runs for ~2,000 tokens unless cancelled."""
    return inference_pb2_grpc.InferenceStub(ch).Generate(inference_pb2.GenerateRequest(
        model=DEMO_MODEL_NAME, prompt="Hello",
        sampling=inference_pb2.SamplingParams(max_tokens=2000, ignore_eos=True, temperature=0)))


def _state(daemon):
    dep = daemon.ctx.deployments.get(DEMO_MODEL_NAME)
    return dep.state if dep is not None else None


async def test_deploy_abandoned_at_its_first_event_leaves_nothing_behind(daemon):
    """Closing the stage stream right at VALIDATING used to leave the model PENDING for good."""
    async def scenario():
        dm = daemon.ctx.deployments
        stream = dm.deploy(DeployRequest(DEMO_MODEL_NAME, **SMALL))
        first = await stream.__anext__()
        assert first.stage == Stage.VALIDATING and dm.get(DEMO_MODEL_NAME).state == State.PENDING
        await stream.aclose()
        await daemon.until(lambda: dm.get(DEMO_MODEL_NAME) is None, "the abandoned deployment is dropped")

    daemon.call(scenario())
    async with daemon.channel() as ch:
        assert (await _deploy(node_pb2_grpc.NodeStub(ch)))[-1].stage == node_pb2.DEPLOY_STAGE_READY


async def test_undeploy_whose_caller_goes_away_still_unloads(daemon):
    """A cancelled Undeploy RPC used to cancel the drain half way: the model stayed UNLOADING
    (undeployable, not redeployable) and its engine kept running."""
    async with daemon.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        assert (await _deploy(stub))[-1].stage == node_pb2.DEPLOY_STAGE_READY
        engine = daemon.ctx.deployments.get(DEMO_MODEL_NAME).engine
        gen = _long_generate(ch)
        await gen.read()  # running
        undeploy = stub.Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME, drain_timeout_ms=60_000))
        await daemon.until(lambda: _state(daemon) == State.UNLOADING, "the model is draining")
        undeploy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await undeploy
        gen.cancel()  # the drain now has nothing left to wait for
        await daemon.until(lambda: _state(daemon) is None, "the model is unloaded")
        assert not engine._thread.is_alive()
        from musaops.daemon.trust.audit import AuditFilter

        await daemon.until(lambda: daemon.ctx.audit.query(AuditFilter(action="node.Undeploy")), "the unload is audited")
        (record,) = daemon.ctx.audit.query(AuditFilter(action="node.Undeploy"))
        assert record.outcome == "ok"
        models = (await stub.ListModels(node_pb2.ListModelsRequest())).models
        assert models[0].state == common_pb2.MODEL_STATE_AVAILABLE
        assert (await _deploy(stub))[-1].stage == node_pb2.DEPLOY_STAGE_READY


async def test_shutdown_during_an_undeploy_drain_closes_the_engine(make_daemon):
    """Shutdown used to cancel an Undeploy's drain and never close that engine (its step
    thread outlived the daemon)."""
    d = make_daemon(**{"server.grace_seconds": 0.2})
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        assert (await _deploy(stub))[-1].stage == node_pb2.DEPLOY_STAGE_READY
        engine = d.ctx.deployments.get(DEMO_MODEL_NAME).engine
        gen = _long_generate(ch)
        await gen.read()
        undeploy = stub.Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME, drain_timeout_ms=600_000))
        await d.until(lambda: _state(d) == State.UNLOADING, "the model is draining")
        await asyncio.to_thread(d.stop)
        assert not engine._thread.is_alive()
        for call in (undeploy, gen):
            call.cancel()


async def test_shutdown_while_loading_ends_the_deploy_failed_at_once(make_daemon):
    """Deploy or Undeploy during a load is refused; SIGTERM during a load used to wait out the whole grace period for a model it would
    unload anyway; now the load is cancelled and the Deploy stream ends FAILED, saying why."""
    from musaops.daemon.engine import load_engine

    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_start_loader(*args, cancel, **kwargs):
        """The real loader, held back until the deploy is cancelled (a large checkpoint)."""
        loop.call_soon_threadsafe(started.set)
        cancel.wait(60)
        return load_engine(*args, cancel=cancel, **kwargs)

    d = make_daemon(server_kwargs={"loader": slow_start_loader}, **{"server.grace_seconds": 60})
    async with d.channel() as ch:
        call = node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(model=DEMO_MODEL_NAME, **SMALL))
        assert (await call.read()).stage == node_pb2.DEPLOY_STAGE_VALIDATING
        await started.wait()
        # while it loads: a second Deploy and an Undeploy are refused with the state named
        node = node_pb2_grpc.NodeStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _deploy(node)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS and "(loading)" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await node.Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "is loading" in err.value.details()
        stopping = asyncio.ensure_future(asyncio.to_thread(d.stop))
        events = []
        while (ev := await call.read()) is not grpc.aio.EOF:
            events.append(ev)
        await stopping
    assert events[-1].stage == node_pb2.DEPLOY_STAGE_FAILED and "shutting down" in events[-1].message, events
    assert d.ctx.deployments.all() == [] or all(dep.engine is None for dep in d.ctx.deployments.all())


async def test_loads_in_progress_do_not_starve_other_rpcs(make_daemon, tmp_path, demo_model_dir):
    """Loads used to run on the loop's default executor: as many slow loads as it has
    workers left ListModels (and everything else sent to a thread) waiting for them."""
    import os

    workers = min(32, (os.cpu_count() or 1) + 4)  # the default executor's size
    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(workers):
        os.symlink(demo_model_dir, repo / f"m{i}")
    loading = asyncio.Semaphore(0)
    loop = asyncio.get_running_loop()

    def held_loader(*args, cancel, **kwargs):
        """Never gets past the start of a (huge) checkpoint until cancelled."""
        loop.call_soon_threadsafe(loading.release)
        cancel.wait(60)
        from musaops.daemon.engine.api import LoadError

        raise LoadError("loading was cancelled")

    d = make_daemon(models_dir=repo, server_kwargs={"loader": held_loader},
                    **{"engine.max_models": workers, "server.grace_seconds": 0.2})
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        calls = [stub.Deploy(node_pb2.DeployRequest(model=f"m{i}", **SMALL)) for i in range(workers)]
        for _ in calls:
            await loading.acquire()
        models = (await stub.ListModels(node_pb2.ListModelsRequest(), timeout=30)).models
        assert {m.state for m in models} == {common_pb2.MODEL_STATE_LOADING}
        for c in calls:
            c.cancel()
