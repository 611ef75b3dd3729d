"""Fixtures for the HTTP front door: a real musad (gRPC + HTTP on port 0) with the demo
model deployed, and helpers that make keys and clients for it."""

from __future__ import annotations

import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import node_pb2, node_pb2_grpc

SMALL = dict(max_batch=8, max_context=2048, kv_cache_fraction=0.05)


async def deploy(d, model: str = DEMO_MODEL_NAME, token: str | None = None) -> None:
    md = (("authorization", f"Bearer {token}"),) if token else None
    async with d.channel() as ch:
        events = [e async for e in node_pb2_grpc.NodeStub(ch).Deploy(
            node_pb2.DeployRequest(model=model, **SMALL), metadata=md)]
    assert events[-1].stage == node_pb2.DEPLOY_STAGE_READY, events[-1]


def base_url(d) -> str:
    return f"http://127.0.0.1:{d.ctx.http.port}/v1"


def make_key(d, name: str, role: str = "client", **limits) -> str:
    """A token made on the daemon's own store (as `musad token create` does)."""
    from musaops.daemon.limits import KeyLimits

    if "models" in limits:
        limits["models"] = tuple(limits["models"])
    return d.ctx.auth.create(name, role, limits=KeyLimits(**limits))


@pytest.fixture
def served(make_daemon):
    """A daemon with auth on and the demo model READY; `.admin` holds an admin token."""
    d = make_daemon(**{"auth.required": True})
    d.admin = make_key(d, "root", "admin")
    d.call(deploy(d, token=d.admin))
    return d
