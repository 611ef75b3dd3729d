"""A vLLM deployment's restart policy (DeployRequest.max_restarts, issue 14 item 6): checked,
refused for the built-in engine, the request's value over the node's engines.vllm.restarts,
and reported in DeploymentInfo. The crash and restart themselves run against a real vLLM
child in tests/supervised/test_vllm.py."""

from __future__ import annotations

import sys

import grpc
import pytest

from musaops.app.core.engine_options import MAX_RESTARTS as CONSOLE_MAX_RESTARTS
from musaops.app.core.operations import DeploySpec
from musaops.app.services import convert
from musaops.daemon.config import VllmConfig
from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.daemon.deployments import DeployRequest
from musaops.daemon.errors import RequestError, Status
from musaops.daemon.supervised import options as opts
from musaops.daemon.supervised.supervisor import Supervisor
from musaops.v1 import common_pb2, node_pb2, node_pb2_grpc

pytestmark = pytest.mark.timeout(120)


def _vllm(max_restarts, default_restarts=1):
    return opts.check_vllm("cpu", (0,), 0, 2, 0, None, "", 0.0, max_restarts, default_restarts)


def test_the_requests_value_wins_over_the_nodes_and_is_checked() -> None:
    assert _vllm(None, default_restarts=3).max_restarts == 3   # unset: the node's engines.vllm.restarts
    assert _vllm(0, default_restarts=3).max_restarts == 0      # 0 is a value: stay FAILED at once
    assert _vllm(opts.MAX_RESTARTS).max_restarts == opts.MAX_RESTARTS
    with pytest.raises(opts.OptionError, match=r"max_restarts 11 is outside 0\.\.10"):
        _vllm(11)
    assert CONSOLE_MAX_RESTARTS == opts.MAX_RESTARTS   # the deploy dialog's range is the daemon's


def test_the_builtin_engine_refuses_a_restart_policy() -> None:
    sup = Supervisor(VllmConfig(python=sys.executable, restarts=2), "/nonexistent")
    with pytest.raises(RequestError) as err:
        sup.choose(DeployRequest(model="m", max_restarts=0), "cpu", (0,))
    assert err.value.code == Status.INVALID_ARGUMENT
    assert "built-in engine runs inside musad" in str(err.value) and "\n" not in str(err.value)
    assert sup.choose(DeployRequest(model="m"), "cpu", (0,)) == ("builtin", None)


def test_the_proto_field_round_trips_unset_and_zero() -> None:
    unset = node_pb2.DeployRequest.FromString(convert.deploy_request(DeploySpec("m")).SerializeToString())
    assert not unset.HasField("max_restarts")
    zero = node_pb2.DeployRequest.FromString(
        convert.deploy_request(DeploySpec("m", engine="vllm", max_restarts=0)).SerializeToString())
    assert zero.HasField("max_restarts") and zero.max_restarts == 0
    info = node_pb2.ModelInfo(name="m", deployment=node_pb2.DeploymentInfo(restarts=1, max_restarts=3))
    d = convert.model_entry(node_pb2.ModelInfo.FromString(info.SerializeToString())).deployment
    assert (d.restarts, d.max_restarts) == (1, 3)


async def test_a_daemon_refuses_bad_restart_policies_with_a_sentence(daemon):
    async with daemon.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        cases = [(dict(max_restarts=0), "built-in engine runs inside musad"),
                 (dict(engine="vllm", max_restarts=11), "max_restarts 11 is outside 0..10")]
        for kw, words in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                [p async for p in stub.Deploy(node_pb2.DeployRequest(model=DEMO_MODEL_NAME, **kw))]
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kw
            assert words in err.value.details() and "\n" not in err.value.details(), err.value.details()
        models = (await stub.ListModels(node_pb2.ListModelsRequest())).models
        assert all(m.state != common_pb2.MODEL_STATE_FAILED for m in models)
