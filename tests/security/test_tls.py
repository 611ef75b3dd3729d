"""TLS and mTLS on a real port: a good client certificate, one from another CA, none, and
an expired one; plaintext on a non-loopback address is refused unless --insecure."""

from __future__ import annotations

import datetime as dt
import logging

import grpc
import pytest

from musaops.daemon.config import load_config
from musaops.daemon.trust.tls import (InsecureBindError, init_certs, issue, make_ca, server_credentials)
from musaops.v1 import node_pb2, node_pb2_grpc

from .conftest import serve_secure_node


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    files = init_certs(d, ["localhost", "127.0.0.1"], client_cn="ops-console")
    ca_cert = files["ca"].read_bytes()
    from cryptography.hazmat.primitives import serialization
    from musaops.daemon.trust.tls import Issued
    from cryptography import x509

    ca = Issued(x509.load_pem_x509_certificate(ca_cert),
                serialization.load_pem_private_key(files["ca_key"].read_bytes(), None))
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
    expired = issue(ca, "ops-console", client=True, not_before=past, not_after=past + dt.timedelta(days=1))
    other = issue(make_ca("someone else's CA"), "ops-console", client=True)
    return {"files": files, "expired": expired, "other": other, "ca": ca_cert}


def _mtls_creds(pki) -> grpc.ServerCredentials:
    f = pki["files"]
    return grpc.ssl_server_credentials([(f["server_key"].read_bytes(), f["server"].read_bytes())],
                                       root_certificates=f["ca"].read_bytes(), require_client_auth=True)


async def _get_info(address: str, creds: grpc.ChannelCredentials, metadata=()) -> tuple[grpc.StatusCode, str]:
    async with grpc.aio.secure_channel(address, creds) as ch:
        try:
            r = await node_pb2_grpc.NodeStub(ch).GetInfo(node_pb2.GetInfoRequest(), metadata=metadata,
                                                         timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, r.hostname


@pytest.mark.timeout(90)
async def test_mtls_good_other_ca_none_and_expired(pki, sqlite_url):
    f = pki["files"]
    ca = f["ca"].read_bytes()
    async with serve_secure_node(sqlite_url, credentials=_mtls_creds(pki)) as node:
        good = grpc.ssl_channel_credentials(ca, f["client_key"].read_bytes(), f["client"].read_bytes())
        # a verified certificate without a role on this node is refused ...
        code, details = await _get_info(node.address, good)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "ops-console" in details
        # ... and once an admin gives its CN a role, the CN is the actor
        node.tokens.create("ops-console", "viewer")
        assert await _get_info(node.address, good) == (grpc.StatusCode.OK, "ops-console")
        # a token over mTLS gives the role; the certificate still names the actor
        md = (("authorization", f"Bearer {node.role_tokens['admin']}"),)
        assert await _get_info(node.address, good, md) == (grpc.StatusCode.OK, "ops-console")

        other = pki["other"]
        for name, creds in {
            "other CA": grpc.ssl_channel_credentials(ca, other.key_pem(), other.cert_pem()),
            "no cert": grpc.ssl_channel_credentials(ca),
            "expired": grpc.ssl_channel_credentials(ca, pki["expired"].key_pem(), pki["expired"].cert_pem()),
        }.items():
            code, _ = await _get_info(node.address, creds, md)
            assert code == grpc.StatusCode.UNAVAILABLE, name
        denied = [e for e in node.log.query(limit=100) if e.outcome == "denied"]
        assert [(e.actor, e.action) for e in denied] == [("ops-console", "node.GetInfo")]


@pytest.mark.timeout(60)
async def test_tls_server_only_with_tokens_and_wrong_trust(pki, sqlite_url):
    f = pki["files"]
    creds = grpc.ssl_server_credentials([(f["server_key"].read_bytes(), f["server"].read_bytes())])
    async with serve_secure_node(sqlite_url, credentials=creds) as node:
        md = (("authorization", f"Bearer {node.role_tokens['viewer']}"),)
        trusting = grpc.ssl_channel_credentials(f["ca"].read_bytes())
        assert await _get_info(node.address, trusting, md) == (grpc.StatusCode.OK, "viewer-token")
        assert (await _get_info(node.address, trusting))[0] == grpc.StatusCode.UNAUTHENTICATED
        wrong_ca = grpc.ssl_channel_credentials(pki["other"].cert_pem())
        assert (await _get_info(node.address, wrong_ca, md))[0] == grpc.StatusCode.UNAVAILABLE


def test_plaintext_on_non_loopback_needs_insecure(tmp_path, caplog, pki):
    base = {"storage.state_dir": str(tmp_path)}
    assert server_credentials(load_config(None, {**base, "server.listen": "127.0.0.1:0"})) is None
    with pytest.raises(InsecureBindError, match="--insecure"):
        server_credentials(load_config(None, {**base, "server.listen": "0.0.0.0:0"}))
    with caplog.at_level(logging.WARNING):
        assert server_credentials(load_config(None, {**base, "server.listen": "0.0.0.0:0",
                                                     "server.insecure": True})) is None
    assert "INSECURE" in caplog.text
    f = pki["files"]
    tls = load_config(None, {**base, "server.listen": "0.0.0.0:0", "tls.cert": str(f["server"]),
                             "tls.key": str(f["server_key"]), "tls.client_ca": str(f["ca"])})
    assert isinstance(server_credentials(tls), grpc.ServerCredentials)


def test_certs_init_writes_private_keys_0600_and_refuses_overwrite(tmp_path):
    files = init_certs(tmp_path, ["node1.example", "10.0.0.5"])
    for k in ("ca_key", "server_key", "client_key"):
        assert files[k].stat().st_mode & 0o777 == 0o600
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(files["server"].read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node1.example"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    with pytest.raises(FileExistsError):
        init_certs(tmp_path, ["x"])


@pytest.mark.timeout(120)
def test_musad_serve_refuses_plaintext_on_all_interfaces(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "musaops.daemon.cli", "serve", "--listen", "0.0.0.0:0",
                        "--metrics-listen", "", "--state-dir", str(tmp_path), "--models", str(tmp_path),
                        "--device", "cpu"], capture_output=True, text=True, timeout=100)
    assert r.returncode == 2 and "--insecure" in r.stderr, r.stderr[-2000:]


@pytest.mark.timeout(120)
def test_musad_serve_with_a_missing_certificate_says_so(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "musaops.daemon.cli", "serve", "--listen", "127.0.0.1:0",
                        "--metrics-listen", "", "--state-dir", str(tmp_path), "--models", str(tmp_path),
                        "--device", "cpu", "--tls-cert", str(tmp_path / "nope.pem"),
                        "--tls-key", str(tmp_path / "nope-key.pem")], capture_output=True, text=True, timeout=100)
    assert r.returncode == 2 and "nope-key.pem" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_unusable_certificates_are_named(tmp_path, pki):
    f = pki["files"]
    base = {"storage.state_dir": str(tmp_path), "server.listen": "127.0.0.1:0"}
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    cases = {
        "not a PEM certificate": {"tls.cert": str(junk), "tls.key": str(f["server_key"])},
        "does not belong": {"tls.cert": str(f["server"]), "tls.key": str(f["client_key"])},
        "client CA": {"tls.cert": str(f["server"]), "tls.key": str(f["server_key"]), "tls.client_ca": str(junk)},
    }
    for words, over in cases.items():
        with pytest.raises(ValueError, match=words):
            server_credentials(load_config(None, {**base, **over}))
    expired = tmp_path / "expired.pem"
    expired_key = tmp_path / "expired-key.pem"
    expired.write_bytes(pki["expired"].cert_pem())
    expired_key.write_bytes(pki["expired"].key_pem())
    with pytest.raises(ValueError, match="expired"):
        server_credentials(load_config(None, {**base, "tls.cert": str(expired), "tls.key": str(expired_key)}))
