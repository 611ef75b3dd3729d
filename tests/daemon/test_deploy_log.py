"""Every Deploy leaves a line in the daemon log: ready (engine, device, dtype, seconds),
failed (with the reason) and refused; and every Undeploy one."""

from __future__ import annotations

import json
import logging
import shutil

import grpc
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import node_pb2, node_pb2_grpc

pytestmark = pytest.mark.timeout(180)
SMALL = dict(max_batch=2, max_context=128, kv_cache_fraction=0.05)


def _lines(caplog, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "musaops.daemon.deployments" and needle in r.getMessage()]


async def test_deploys_failures_refusals_and_undeploys_are_logged(make_daemon, tmp_path, demo_model_dir, caplog):
    caplog.set_level(logging.INFO)
    repo = tmp_path / "repo"
    shutil.copytree(demo_model_dir, repo / DEMO_MODEL_NAME)
    shutil.copytree(demo_model_dir, repo / "wrong")
    cfg = json.loads((repo / "wrong" / "config.json").read_text())
    cfg["intermediate_size"] //= 2   # the weights do not fit: the load fails
    (repo / "wrong" / "config.json").write_text(json.dumps(cfg))
    d = make_daemon(models_dir=repo)
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        [p async for p in stub.Deploy(node_pb2.DeployRequest(model=DEMO_MODEL_NAME, **SMALL))]
        (ok,) = _lines(caplog, f"deployed {DEMO_MODEL_NAME}:")
        assert ok.levelno == logging.INFO
        assert "engine builtin on cpu[" in ok.getMessage() and " s" in ok.getMessage()

        last = [p async for p in stub.Deploy(node_pb2.DeployRequest(model="wrong", **SMALL))][-1]
        assert last.stage == node_pb2.DEPLOY_STAGE_FAILED
        (failed,) = _lines(caplog, "deploy of wrong failed")
        assert failed.levelno == logging.WARNING and last.message in failed.getMessage()

        with pytest.raises(grpc.aio.AioRpcError):
            [p async for p in stub.Deploy(node_pb2.DeployRequest(model="absent", **SMALL))]
        (refused,) = _lines(caplog, "deploy of 'absent' refused (not_found)")
        assert "absent" in refused.getMessage()

        await stub.Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME))
        assert _lines(caplog, f"undeployed {DEMO_MODEL_NAME}:")
