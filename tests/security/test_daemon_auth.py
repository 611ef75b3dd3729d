"""The real daemon (run_server, real servicers) with auth on: tokens, roles and the audit
records its control RPCs write, read back through Audit.Query."""

from __future__ import annotations

import grpc
import pytest

from musaops.v1 import audit_pb2, audit_pb2_grpc, node_pb2, node_pb2_grpc


@pytest.mark.timeout(120)
async def test_real_daemon_enforces_roles_and_audits(make_daemon):
    d = make_daemon(**{"auth.required": True})
    tokens = {role: d.ctx.auth.create(f"{role}-1", role) for role in ("viewer", "operator", "auditor")}

    def md(role):
        return (("authorization", f"Bearer {tokens[role]}"),)

    async with grpc.aio.insecure_channel(d.address) as ch:
        node = node_pb2_grpc.NodeStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await node.GetInfo(node_pb2.GetInfoRequest())
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        info = await node.GetInfo(node_pb2.GetInfoRequest(), metadata=md("viewer"))
        assert info.auth_required
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async for _ in node.Deploy(node_pb2.DeployRequest(model="nope"), metadata=md("viewer")):
                pass
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async for _ in node.Deploy(node_pb2.DeployRequest(model="nope"), metadata=md("operator")):
                pass
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND

        audit = audit_pb2_grpc.AuditStub(ch)
        recs = [r async for r in audit.Query(audit_pb2.AuditQuery(action="node.Deploy"), metadata=md("auditor"))]
        assert [(r.actor, r.outcome, r.target) for r in recs] == [
            ("viewer-1", audit_pb2.OUTCOME_DENIED, ""),
            ("operator-1", audit_pb2.OUTCOME_FAILED, "nope")]
        assert all(r.node == d.ctx.hostname and len(r.hash) == 64 for r in recs)
        page = [r async for r in audit.Query(audit_pb2.AuditQuery(limit=2, descending=True), metadata=md("auditor"))]
        assert len(page) == 2 and page[0].seq > page[1].seq
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async for _ in audit.Query(audit_pb2.AuditQuery(since_unix_ms=5, until_unix_ms=4), metadata=md("auditor")):
                pass
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        v = await audit.Verify(audit_pb2.VerifyRequest(), metadata=md("auditor"))
        assert v.ok and v.records >= 6    # config.change, 3 token.create, 2 Deploy, GetInfo denial


@pytest.mark.timeout(120)
async def test_real_daemon_over_mtls_names_the_certificate(make_daemon, tmp_path):
    from musaops.daemon.trust.tls import init_certs

    f = init_certs(tmp_path / "pki", ["127.0.0.1"], client_cn="desk-7")
    d = make_daemon(**{"auth.required": True, "tls.cert": str(f["server"]), "tls.key": str(f["server_key"]),
                       "tls.client_ca": str(f["ca"])})
    d.ctx.auth.create("desk-7", "auditor")
    creds = grpc.ssl_channel_credentials(f["ca"].read_bytes(), f["client_key"].read_bytes(),
                                         f["client"].read_bytes())
    async with grpc.aio.secure_channel(d.address, creds) as ch:
        info = await node_pb2_grpc.NodeStub(ch).GetInfo(node_pb2.GetInfoRequest())
        assert info.tls and info.auth_required
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async for _ in node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(model="x")):
                pass
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        recs = [r async for r in audit_pb2_grpc.AuditStub(ch).Query(
            audit_pb2.AuditQuery(outcome=audit_pb2.OUTCOME_DENIED))]
    assert [(r.actor, r.role, r.action) for r in recs] == [("desk-7", "auditor", "node.Deploy")]
    async with grpc.aio.insecure_channel(d.address) as plain:
        with pytest.raises(grpc.aio.AioRpcError):
            await node_pb2_grpc.NodeStub(plain).GetInfo(node_pb2.GetInfoRequest(), timeout=5)
