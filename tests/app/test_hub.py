"""NodeHub against real daemons: connect, telemetry with backfill, errors as sentences."""

from __future__ import annotations

import pytest

from musaops.app.core import ConnectionState, NodeAddress, TlsFiles
from musaops.app.services.node_hub import Backoff

pytestmark = pytest.mark.timeout(120)


def _addr(daemon, **kw) -> NodeAddress:
    return NodeAddress("127.0.0.1", daemon.port, **kw)


def _state(state):
    return lambda name, args: name == "on_status" and args[0].state is state


def test_connect_reports_info_then_batched_telemetry(recorder_hub, daemon) -> None:
    hub, rec = recorder_hub
    nid = hub.add_node(_addr(daemon, name="local"))
    _, (status,) = rec.wait_for(_state(ConnectionState.ONLINE))
    assert status.node_id == nid and status.address.label == "local"
    assert status.info is not None and status.info.api_version == "v1"
    assert status.info.backend == "CPU" and len(status.info.devices) >= 1
    _, (node_id, snaps) = rec.wait_for(lambda n, a: n == "on_snapshots" and any(not s.backfill for s in a[1]))
    assert node_id == nid
    snap = [s for s in snaps if not s.backfill][-1]
    assert snap.devices and snap.devices[0].index == 0
    assert snap.host.memory_total_bytes > 0
    assert all(type(s).__module__.startswith("musaops.app.core") for s in snaps)  # never protobuf


def test_reconnect_asks_for_backfill_and_history_arrives_first(recorder_hub, daemon) -> None:
    hub, rec = recorder_hub
    # Let the daemon's ring hold some history, then connect: the first batch is back-filled.
    first = hub.add_node(_addr(daemon))
    rec.wait_for(lambda n, a: n == "on_snapshots" and len(a[1]) >= 1 and not a[1][-1].backfill
                 and a[0] == first)
    rec.wait_for(lambda n, a: n == "on_snapshots" and a[0] == first)
    second = hub.add_node(_addr(daemon))
    _, (nid, snaps) = rec.wait_for(lambda n, a: n == "on_snapshots" and a[0] == second)
    assert snaps[0].backfill, "the first batch of a new stream is history"
    times = [s.time_unix_ms for s in snaps]
    assert times == sorted(times)


def test_invalid_address_is_offline_with_a_sentence(recorder_hub) -> None:
    hub, rec = recorder_hub
    hub.add_node(NodeAddress("bad host", 50051))
    _, (status,) = rec.wait_for(_state(ConnectionState.OFFLINE))
    assert "Invalid address" in status.last_error
    hub.add_node(NodeAddress("127.0.0.1", 70000))
    _, (status,) = rec.wait_for(lambda n, a: n == "on_status" and "port" in a[0].last_error)
    assert status.state is ConnectionState.OFFLINE


def test_unreachable_node_is_offline_and_retried(recorder_hub, daemon) -> None:
    hub, rec = recorder_hub
    # A port that was just free: bind-and-close guarantees nothing listens there.
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    nid = hub.add_node(NodeAddress("127.0.0.1", port))
    _, (status,) = rec.wait_for(_state(ConnectionState.OFFLINE))
    assert status.node_id == nid and "Cannot reach" in status.last_error
    assert status.retry_in > 0
    # It keeps retrying by itself: another OFFLINE report with a new retry delay follows.
    rec.wait_for(lambda n, a: n == "on_status" and a[0].node_id == nid and a[0] != status)


def test_tls_mismatch_with_a_self_made_ca(recorder_hub, daemon, tmp_path) -> None:
    """A console configured for TLS against a plaintext daemon gets a TLS sentence."""
    hub, rec = recorder_hub
    ca = tmp_path / "ca.pem"
    ca.write_bytes(_self_signed_pem())
    hub.add_node(_addr(daemon, tls=TlsFiles(ca=str(ca))))
    _, (status,) = rec.wait_for(_state(ConnectionState.OFFLINE))
    assert "TLS" in status.last_error or "handshake" in status.last_error.lower(), status.last_error


def test_unreadable_tls_file_is_explained(recorder_hub, daemon, tmp_path) -> None:
    hub, rec = recorder_hub
    hub.add_node(_addr(daemon, tls=TlsFiles(ca=str(tmp_path / "missing.pem"))))
    _, (status,) = rec.wait_for(_state(ConnectionState.OFFLINE))
    assert "Cannot read the TLS CA file" in status.last_error


def test_wrong_token_is_rejected_with_a_sentence(recorder_hub, make_daemon) -> None:
    hub, rec = recorder_hub
    d = make_daemon(**{"auth.required": True})
    hub.add_node(NodeAddress("127.0.0.1", d.port, token="not-a-real-token"))
    _, (status,) = rec.wait_for(_state(ConnectionState.UNAUTHORIZED))
    assert "rejected this connection's token" in status.last_error   # more: test_connection_states


def test_commands_on_an_unknown_or_offline_node_return_errors_as_values(recorder_hub) -> None:
    hub, rec = recorder_hub
    hub.refresh_models("node-404")
    _, (err,) = rec.wait_for(lambda n, a: n == "on_command_error")
    assert err.command == "list_models" and "Unknown node" in err.message
    sid = hub.generate("node-404", __import__("musaops.app.core", fromlist=["GenerateSpec"]).GenerateSpec(model="m", prompt="hi"))
    _, (done,) = rec.wait_for(lambda n, a: n == "on_generation_done")
    assert done.stream_id == sid and done.finish_reason == "error" and done.error


def test_list_models_returns_dataclasses(recorder_hub, daemon) -> None:
    hub, rec = recorder_hub
    nid = hub.add_node(_addr(daemon))
    rec.wait_for(_state(ConnectionState.ONLINE))
    hub.refresh_models(nid)
    _, (node_id, models) = rec.wait_for(lambda n, a: n == "on_models")
    assert node_id == nid and [m.name for m in models] == ["tiny-llama"]
    m = models[0]
    assert m.state == "available" and m.parameters > 0 and m.memory_estimates


def test_remove_node_stops_its_stream(recorder_hub, daemon) -> None:
    hub, rec = recorder_hub
    nid = hub.add_node(_addr(daemon))
    rec.wait_for(_state(ConnectionState.ONLINE))
    hub.remove_node(nid)
    rec.wait_for(lambda n, a: n == "on_node_removed" and a[0] == nid)


def test_stop_joins_the_thread_and_is_idempotent(daemon) -> None:
    from tests.app.conftest import FAST, Recorder, console_threads
    from musaops.app.services.node_hub import NodeHub
    rec = Recorder()
    hub = NodeHub(rec, FAST)
    hub.start()
    hub.add_node(_addr(daemon))
    rec.wait_for(_state(ConnectionState.ONLINE))
    hub.stop()
    hub.stop()
    assert not hub.running and "NodeHub" not in console_threads()
    with pytest.raises(RuntimeError):
        hub.add_node(_addr(daemon))


def test_backoff_grows_exponentially_and_is_capped() -> None:
    b = Backoff(initial=0.5, cap=8.0, factor=2.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    jittered = Backoff(initial=1.0, cap=30.0, jitter=0.2)
    assert all(0.8 <= jittered.delay(1) <= 1.2 for _ in range(100))


def _self_signed_pem() -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_tls_node_connects_with_its_ca_and_mismatches_are_explained(recorder_hub, make_daemon,
                                                                    tmp_path) -> None:
    from musaops.daemon.trust.tls import issue, make_ca
    hub, rec = recorder_hub
    ca, other = make_ca("test CA"), make_ca("someone else's CA")
    server = issue(ca, "musad", hosts=("127.0.0.1", "localhost"))
    paths = {}
    for name, data in (("ca.pem", ca.cert_pem()), ("other.pem", other.cert_pem()),
                       ("server.pem", server.cert_pem()), ("server.key", server.key_pem())):
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    d = make_daemon(**{"tls.cert": str(paths["server.pem"]), "tls.key": str(paths["server.key"])})

    good = hub.add_node(NodeAddress("127.0.0.1", d.port, tls=TlsFiles(ca=str(paths["ca.pem"]))))
    _, (status,) = rec.wait_for(lambda n, a: n == "on_status" and a[0].node_id == good
                                and a[0].state is not ConnectionState.CONNECTING)
    assert status.state is ConnectionState.ONLINE and status.info.tls, status.last_error

    wrong_ca = hub.add_node(NodeAddress("127.0.0.1", d.port, tls=TlsFiles(ca=str(paths["other.pem"]))))
    _, (status,) = rec.wait_for(lambda n, a: n == "on_status" and a[0].node_id == wrong_ca
                                and a[0].state is ConnectionState.OFFLINE)
    assert "not signed by the CA" in status.last_error, status.last_error

    plaintext = hub.add_node(NodeAddress("127.0.0.1", d.port))
    _, (status,) = rec.wait_for(lambda n, a: n == "on_status" and a[0].node_id == plaintext
                                and a[0].state is ConnectionState.OFFLINE)
    assert "TLS" in status.last_error, status.last_error


def test_deploy_generate_batched_cancel_and_undeploy(recorder_hub, daemon) -> None:
    from musaops.app.core import DeploySpec, GenerateSpec, Sampling
    hub, rec = recorder_hub
    nid = hub.add_node(_addr(daemon))
    rec.wait_for(_state(ConnectionState.ONLINE))
    op = hub.deploy(nid, DeploySpec("tiny-llama", dtype="float32", max_batch=2, max_context=2048))
    stages = []
    while True:
        _, (ev,) = rec.wait_for(lambda n, a: n == "on_deploy_event" and a[0].op_id == op, timeout=120)
        stages.append(ev.stage)
        if ev.done:
            break
    assert ev.ok and stages[-1] == "ready" and "loading_weights" in stages, stages
    assert ev.entry is not None and ev.entry.state == "ready"

    # A long generation streams in batches (fewer chunks than tokens); Stop cancels the RPC.
    sid = hub.generate(nid, GenerateSpec("tiny-llama", prompt="Once upon a time",
                                         sampling=Sampling(max_tokens=1500, ignore_eos=True,
                                                           temperature=0.0)))
    chunks = []
    while sum(c.tokens for c in chunks) < 40:
        _, (chunk,) = rec.wait_for(lambda n, a: n == "on_tokens" and a[0].stream_id == sid)
        chunks.append(chunk)
    assert len(chunks) < sum(c.tokens for c in chunks)
    hub.cancel(sid)
    _, (done,) = rec.wait_for(lambda n, a: n == "on_generation_done" and a[0].stream_id == sid)
    assert done.finish_reason == "cancelled" and not done.ok

    hub.undeploy(nid, "tiny-llama", cancel_inflight=True)
    _, (result,) = rec.wait_for(lambda n, a: n == "on_undeploy_done", timeout=60)
    assert result.ok and result.model == "tiny-llama", result.message


def test_update_node_moves_the_connection_and_keeps_streaming(recorder_hub, make_daemon) -> None:
    hub, rec = recorder_hub
    a, b = make_daemon(), make_daemon()
    nid = hub.add_node(NodeAddress("127.0.0.1", a.port, name="first"))
    rec.wait_for(_state(ConnectionState.ONLINE))
    hub.update_node(nid, NodeAddress("127.0.0.1", b.port, name="second"))
    rec.wait_for(lambda n, a_: n == "on_status" and a_[0].address.name == "second"
                 and a_[0].state is ConnectionState.ONLINE)
    # Live telemetry keeps flowing on the new channel (the old supervisor closed only its own).
    for _ in range(2):
        rec.wait_for(lambda n, a_: n == "on_snapshots" and a_[0] == nid
                     and any(not s.backfill for s in a_[1]))
