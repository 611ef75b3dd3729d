"""What the console says when it cannot use a node, against real daemons with auth and TLS:
a rejected token or a missing client certificate is the UNAUTHORIZED state with how to fix it
in the console (token file, Add node / Connections), never the metadata advice meant for API
callers; a host-name mismatch, an unknown CA, TLS against plaintext and an unknown host name
each get their own sentence."""

from __future__ import annotations

import pytest

from musaops.app.core import ConnectionState, NodeAddress, TlsFiles

pytestmark = pytest.mark.timeout(120)


def _settled(node_id):
    return lambda n, a: (n == "on_status" and a[0].node_id == node_id
                         and a[0].state not in (ConnectionState.CONNECTING,))


@pytest.fixture
def pki(tmp_path):
    from musaops.daemon.trust.tls import init_certs, issue, make_ca
    files = init_certs(tmp_path / "pki", ["localhost", "127.0.0.1"], client_cn="ops-console")
    other = make_ca("someone else's CA")
    wrong_host = issue(other, "elsewhere", hosts=("elsewhere.example",))
    paths = {k: str(v) for k, v in files.items()}
    for name, data in (("other_ca", other.cert_pem()), ("wrong_host", wrong_host.cert_pem()),
                       ("wrong_host_key", wrong_host.key_pem())):
        (tmp_path / name).write_bytes(data)
        paths[name] = str(tmp_path / name)
    return paths


def test_a_rejected_token_is_unauthorized_with_the_console_fix(recorder_hub, make_daemon) -> None:
    hub, rec = recorder_hub
    d = make_daemon(**{"auth.required": True})
    nid = hub.add_node(NodeAddress("127.0.0.1", d.port, token="not-a-real-token"))
    _, (status,) = rec.wait_for(_settled(nid))
    assert status.state is ConnectionState.UNAUTHORIZED, status
    assert status.last_error.startswith("Unauthorized:")
    assert "token" in status.last_error and "Connections" in status.last_error
    assert "metadata" not in status.last_error.lower() and "authorization:" not in status.last_error.lower()
    # No token at all: the same state, saying that none was given.
    bare = hub.add_node(NodeAddress("127.0.0.1", d.port))
    _, (status,) = rec.wait_for(_settled(bare))
    assert status.state is ConnectionState.UNAUTHORIZED and "no token" in status.last_error, status


def test_tls_problems_each_have_their_sentence(recorder_hub, make_daemon, pki) -> None:
    hub, rec = recorder_hub
    mtls = make_daemon(**{"tls.cert": pki["server"], "tls.key": pki["server_key"],
                          "tls.client_ca": pki["ca"]})
    # mTLS node, no client certificate: UNAUTHORIZED, not "Socket closed".
    nid = hub.add_node(NodeAddress("127.0.0.1", mtls.port, tls=TlsFiles(ca=pki["ca"])))
    _, (status,) = rec.wait_for(_settled(nid))
    assert status.state is ConnectionState.UNAUTHORIZED, status
    assert "client certificate" in status.last_error and "socket closed" not in status.last_error.lower()

    # A CA the node's certificate is not from.
    nid = hub.add_node(NodeAddress("127.0.0.1", mtls.port, tls=TlsFiles(pki["other_ca"], pki["client"],
                                                                        pki["client_key"])))
    _, (status,) = rec.wait_for(_settled(nid))
    assert status.state is ConnectionState.OFFLINE
    assert "not signed by the CA" in status.last_error, status.last_error

    # TLS against a plaintext node.
    plain = make_daemon()
    nid = hub.add_node(NodeAddress("127.0.0.1", plain.port, tls=TlsFiles(ca=pki["ca"])))
    _, (status,) = rec.wait_for(_settled(nid))
    assert "does not speak TLS" in status.last_error, status.last_error

    # Plaintext against a TLS node.
    nid = hub.add_node(NodeAddress("127.0.0.1", mtls.port))
    _, (status,) = rec.wait_for(_settled(nid))
    assert "requires TLS" in status.last_error, status.last_error

    # A certificate for another host name.
    other_host = make_daemon(**{"tls.cert": pki["wrong_host"], "tls.key": pki["wrong_host_key"]})
    nid = hub.add_node(NodeAddress("127.0.0.1", other_host.port, tls=TlsFiles(ca=pki["other_ca"])))
    _, (status,) = rec.wait_for(_settled(nid))
    assert "host name" in status.last_error and "127.0.0.1" in status.last_error, status.last_error


def test_an_unknown_host_name_says_so(recorder_hub) -> None:
    hub, rec = recorder_hub
    nid = hub.add_node(NodeAddress("no-such-host.invalid", 50051))
    _, (status,) = rec.wait_for(_settled(nid), timeout=60)
    assert "Cannot resolve the host name 'no-such-host.invalid'" in status.last_error, status.last_error
