"""The role x RPC matrix: exact status codes, and every refusal in the audit log."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from musaops.daemon.trust.caller import ROLES
from musaops.v1 import (audit_pb2, audit_pb2_grpc, inference_pb2, inference_pb2_grpc,
                        node_pb2, node_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc)

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED


async def _call(channel: grpc.aio.Channel, rpc: str, metadata) -> grpc.StatusCode:
    """Makes one call; returns its status code (streams are read to the end)."""
    node = node_pb2_grpc.NodeStub(channel)
    calls = {
        "GetInfo": lambda: node.GetInfo(node_pb2.GetInfoRequest(), metadata=metadata),
        "ListModels": lambda: node.ListModels(node_pb2.ListModelsRequest(), metadata=metadata),
        "Deploy": lambda: node.Deploy(node_pb2.DeployRequest(model="m"), metadata=metadata),
        "Undeploy": lambda: node.Undeploy(node_pb2.UndeployRequest(model="m"), metadata=metadata),
        "Telemetry": lambda: telemetry_pb2_grpc.TelemetryStub(channel).Stream(
            telemetry_pb2.StreamRequest(), metadata=metadata),
        "Generate": lambda: inference_pb2_grpc.InferenceStub(channel).Generate(
            inference_pb2.GenerateRequest(model="m", prompt="hi"), metadata=metadata),
        "AuditQuery": lambda: audit_pb2_grpc.AuditStub(channel).Query(
            audit_pb2.AuditQuery(), metadata=metadata),
        "AuditVerify": lambda: audit_pb2_grpc.AuditStub(channel).Verify(
            audit_pb2.VerifyRequest(), metadata=metadata),
    }
    call = calls[rpc]()
    try:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    except grpc.aio.AioRpcError as exc:
        assert exc.details(), "a refusal must carry a sentence"
        return exc.code()
    return OK


RPCS = ("GetInfo", "ListModels", "Telemetry", "Generate", "Deploy", "Undeploy",
        "AuditQuery", "AuditVerify")
EXPECTED = {
    "viewer":   (OK, OK, OK, DENIED, DENIED, DENIED, DENIED, DENIED),
    "client":   (DENIED, DENIED, DENIED, OK, DENIED, DENIED, DENIED, DENIED),   # inference only
    "operator": (OK, OK, OK, OK, OK, OK, DENIED, DENIED),
    "auditor":  (OK, OK, OK, DENIED, DENIED, DENIED, OK, OK),
    "admin":    (OK, OK, OK, OK, OK, OK, OK, OK),
}


@pytest.mark.timeout(60)
async def test_role_matrix_gives_exact_codes_and_audits_denials(secure_node):
    async with grpc.aio.insecure_channel(secure_node.address) as ch:
        for role in ROLES:
            md = (("authorization", f"Bearer {secure_node.role_tokens[role]}"),)
            got = tuple([await _call(ch, rpc, md) for rpc in RPCS])
            assert dict(zip(RPCS, got)) == dict(zip(RPCS, EXPECTED[role])), role
    denied = secure_node.log.query(limit=10000)
    denied = [(e.actor, e.role, e.action) for e in denied if e.outcome == "denied"]
    expected_denied = [(f"{role}-token", role, action)
                       for role in ROLES
                       for rpc, code, action in zip(RPCS, EXPECTED[role], (
                           "node.GetInfo", "node.ListModels", "telemetry.Stream",
                           "inference.Generate", "node.Deploy", "node.Undeploy",
                           "audit.Query", "audit.Verify"))
                       if code == DENIED]
    assert denied == expected_denied
    assert secure_node.log.verify().ok


@pytest.mark.timeout(60)
async def test_missing_bad_expired_and_revoked_tokens_are_unauthenticated(secure_node):
    tokens = secure_node.tokens
    expired = tokens.create("short-lived", "admin", expires_days=1e-9)
    revoked = tokens.create("gone", "admin")
    tokens.revoke("gone")
    cases = {
        "missing": (),
        "bad": (("authorization", "Bearer musa_not-a-real-token"),),
        "not bearer": (("authorization", "Basic dXNlcjpwdw=="),),
        "expired": (("authorization", f"Bearer {expired}"),),
        "revoked": (("authorization", f"Bearer {revoked}"),),
    }
    async with grpc.aio.insecure_channel(secure_node.address) as ch:
        for name, md in cases.items():
            for rpc in RPCS:
                assert await _call(ch, rpc, md) == UNAUTH, (name, rpc)
        # health stays open without a token
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    denied = [e for e in secure_node.log.query(limit=10000) if e.outcome == "denied"]
    assert len(denied) == len(cases) * len(RPCS)
    assert all(e.error and e.client.startswith("ipv4:127.0.0.1") for e in denied)
    assert {e.actor for e in denied} == {"anonymous", "invalid-token"}
    # the token changes themselves are audited
    actions = [(e.action, e.target) for e in secure_node.log.query(limit=10000)
               if e.action.startswith("token.")]
    assert ("token.create", "short-lived") in actions and ("token.revoke", "gone") in actions


@pytest.mark.timeout(60)
async def test_handler_sees_the_caller_and_control_records_name_it(secure_node):
    md = (("authorization", f"Bearer {secure_node.role_tokens['operator']}"),)
    async with grpc.aio.insecure_channel(secure_node.address) as ch:
        info = await node_pb2_grpc.NodeStub(ch).GetInfo(node_pb2.GetInfoRequest(), metadata=md)
        assert info.hostname == "operator-token"   # the test servicer echoes current_caller()
        await node_pb2_grpc.NodeStub(ch).Undeploy(node_pb2.UndeployRequest(model="m"), metadata=md)
    last = secure_node.log.query(limit=1, descending=True)[0]
    assert (last.action, last.target, last.actor, last.role, last.outcome) == (
        "node.Undeploy", "m", "operator-token", "operator", "ok")
    assert last.client.startswith("ipv4:127.0.0.1:")


def test_tokens_are_stored_only_as_hashes(tmp_path):
    from musaops.daemon.trust.audit import AuditLog
    from musaops.daemon.trust.tokens import TokenError, TokenStore

    db = tmp_path / "t.db"
    with AuditLog.open(str(db), node="n") as log:
        store = TokenStore(log.engine, audit=log)
        token = store.create("alice", "viewer")
        assert token.startswith("musa_") and len(token) > 40
        assert store.authenticate(token).name == "alice"
        with pytest.raises(TokenError):
            store.create("alice", "viewer")
        with pytest.raises(TokenError):
            store.create("bob", "root")
        with pytest.raises(TokenError):
            store.revoke("nobody")
    assert token.encode() not in db.read_bytes()


@pytest.mark.timeout(60)
async def test_cancelled_stream_closes_the_handler_through_the_interceptor(secure_node):
    import asyncio

    from .conftest import _Telemetry

    _Telemetry.closed = asyncio.Event()
    md = (("authorization", f"Bearer {secure_node.role_tokens['viewer']}"),)
    async with grpc.aio.insecure_channel(secure_node.address) as ch:
        call = telemetry_pb2_grpc.TelemetryStub(ch).Stream(telemetry_pb2.StreamRequest(interval_ms=1), metadata=md)
        await call.read()
        await call.read()
        call.cancel()
        await asyncio.wait_for(_Telemetry.closed.wait(), 30)
    _Telemetry.closed = None
