"""Fixtures for the security tests: a real grpc.aio server on port 0 with the auth
interceptor, a real SQLite audit log and token store, and one token per role.

The Node/Inference/Telemetry servicers here answer with empty messages: these tests are
about who may call what (the interceptor and the audit trail), not what the calls do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from musaops.daemon.services.audit import add_audit_service
from musaops.daemon.trust.audit import AuditLog
from musaops.daemon.trust.auth import AuthInterceptor
from musaops.daemon.trust.caller import ROLES, current_caller
from musaops.daemon.trust.tokens import TokenStore
from musaops.v1 import (inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc,
                        telemetry_pb2, telemetry_pb2_grpc)


class _Node(node_pb2_grpc.NodeServicer):
    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def GetInfo(self, request, context):
        return node_pb2.GetInfoResponse(hostname=current_caller().actor)

    async def ListModels(self, request, context):
        return node_pb2.ListModelsResponse()

    async def Deploy(self, request, context):
        await self.log.record("node.Deploy", request.model, {"dtype": request.dtype}, "ok")
        yield node_pb2.DeployProgress()

    async def Undeploy(self, request, context):
        await self.log.record("node.Undeploy", request.model, {}, "ok")
        return node_pb2.UndeployResponse()


class _Inference(inference_pb2_grpc.InferenceServicer):
    async def Generate(self, request, context):
        yield inference_pb2.GenerateResponse()


class _Telemetry(telemetry_pb2_grpc.TelemetryServicer):
    """Finite by default; interval_ms=1 asks for an endless stream (for cancellation tests)."""

    closed = None   # an asyncio.Event set when an endless stream's handler has finished

    async def Stream(self, request, context):
        if request.interval_ms != 1:
            yield telemetry_pb2.Snapshot()
            return
        try:
            while True:
                yield telemetry_pb2.Snapshot()
                await asyncio.sleep(0.01)
        finally:
            if _Telemetry.closed is not None:
                _Telemetry.closed.set()


@dataclasses.dataclass
class SecureNode:
    address: str
    log: AuditLog
    tokens: TokenStore
    role_tokens: dict[str, str]


@contextlib.asynccontextmanager
async def serve_secure_node(db_url: str, *, required: bool = True,
                            credentials: grpc.ServerCredentials | None = None):
    log = AuditLog.open(db_url, node="test-node")
    tokens = TokenStore(log.engine, audit=log)
    server = grpc.aio.server(interceptors=[AuthInterceptor(tokens, log, required=required)])
    node_pb2_grpc.add_NodeServicer_to_server(_Node(log), server)
    inference_pb2_grpc.add_InferenceServicer_to_server(_Inference(), server)
    telemetry_pb2_grpc.add_TelemetryServicer_to_server(_Telemetry(), server)
    add_audit_service(server, log)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        role_tokens = {r: tokens.create(f"{r}-token", r) for r in ROLES}
        yield SecureNode(f"127.0.0.1:{port}", log, tokens, role_tokens)
    finally:
        await server.stop(None)
        log.close()


@pytest.fixture
def sqlite_url(tmp_path: pathlib.Path) -> str:
    return f"sqlite:///{tmp_path / 'musad.db'}"


@pytest.fixture
async def secure_node(sqlite_url):
    async with serve_secure_node(sqlite_url) as node:
        yield node
