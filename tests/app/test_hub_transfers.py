"""NodeHub's Models commands against real daemons: import from the workstation with
progress, node-to-node pull with the console's source credential, delete, free space,
cancel (the staged bytes stay for a resume), and failures as sentences."""

from __future__ import annotations

import pytest

from musaops.app.core import ConnectionState, NodeAddress
from musaops.app.core.transfers import TransferEvent

pytestmark = pytest.mark.timeout(180)


def _online(hub, rec, daemon, **kw) -> str:
    nid = hub.add_node(NodeAddress("127.0.0.1", daemon.port, **kw))
    rec.wait_for(lambda n, a: n == "on_status" and a[0].node_id == nid and a[0].state is ConnectionState.ONLINE)
    return nid


def _last(rec, op_id, timeout=60.0) -> TransferEvent:
    _, (ev,) = rec.wait_for(lambda n, a: n == "on_transfer" and a[0].op_id == op_id and a[0].done, timeout)
    return ev


def test_import_pull_delete_and_space(recorder_hub, make_daemon, tmp_path, demo_model_dir):
    hub, rec = recorder_hub
    a_repo, b_repo = tmp_path / "a", tmp_path / "b"
    a_repo.mkdir()
    b_repo.mkdir()
    a = make_daemon(models_dir=a_repo, **{"server.http_listen": ""})
    b = make_daemon(models_dir=b_repo, **{"server.http_listen": ""})
    na, nb = _online(hub, rec, a), _online(hub, rec, b)

    space = _last(rec, hub.repository_space(na))
    assert space.ok and space.free_bytes > 0 and space.message == str(a_repo)

    op = hub.import_model(na, str(demo_model_dir), "mine")
    ev = _last(rec, op)
    assert ev.ok and ev.stage == "done" and ev.bytes_done == ev.bytes_total > 0, ev
    steps = [x[1][0] for x in rec.seen if x[0] == "on_transfer" and x[1][0].op_id == op]
    assert steps[0].stage in ("hashing", "receiving") and steps[-1].done
    for f in demo_model_dir.rglob("*"):
        if f.is_file():
            assert (a_repo / "mine" / f.relative_to(demo_model_dir)).read_bytes() == f.read_bytes()
    # the repository listing follows by itself
    rec.wait_for(lambda n, a: n == "on_models" and a[0] == na and any(m.name == "mine" for m in a[1]))

    again = _last(rec, hub.import_model(na, str(demo_model_dir), "mine"))
    assert not again.ok and "already holds" in again.message

    ev = _last(rec, hub.pull_model(nb, na, "mine"))
    assert ev.ok and ev.source_node_id == na, ev
    assert (b_repo / "mine" / "config.json").read_bytes() == (a_repo / "mine" / "config.json").read_bytes()

    ev = _last(rec, hub.delete_model(nb, "mine"))
    assert ev.ok and ev.bytes_done > 0 and not (b_repo / "mine").exists()
    ev = _last(rec, hub.delete_model(nb, "mine"))
    assert not ev.ok and "no model named" in ev.message

    bad = _last(rec, hub.import_model(na, str(tmp_path / "absent"), "x"))
    assert not bad.ok and "does not exist" in bad.message


def test_pull_with_the_consoles_source_token(recorder_hub, make_daemon, tmp_path, demo_model_dir):
    """The source requires tokens: the console's token for it travels with the pull."""
    hub, rec = recorder_hub
    src = make_daemon(**{"auth.required": True, "server.http_listen": ""})
    dst_repo = tmp_path / "dst"
    dst_repo.mkdir()
    dst = make_daemon(models_dir=dst_repo, **{"server.http_listen": ""})
    secret = src.ctx.auth.create("console", "operator")
    ns, nd = _online(hub, rec, src, token=secret), _online(hub, rec, dst)
    ev = _last(rec, hub.pull_model(nd, ns, demo_model_dir.name))
    assert ev.ok, ev.message
    hub.update_node(ns, NodeAddress("127.0.0.1", src.port, token="wrong"))
    ev = _last(rec, hub.pull_model(nd, ns, "other"))
    assert not ev.ok and "UNAUTHENTICATED" in ev.message


def test_cancel_keeps_the_staged_bytes(recorder_hub, make_daemon, tmp_path):
    hub, rec = recorder_hub
    repo = tmp_path / "repo"
    repo.mkdir()
    d = make_daemon(models_dir=repo, **{"server.http_listen": ""})
    nid = _online(hub, rec, d)
    big = tmp_path / "big"
    big.mkdir()
    (big / "config.json").write_text("{}")
    with open(big / "weights.bin", "wb") as fh:
        fh.truncate(512 << 20)
    op = hub.import_model(nid, str(big), "big")
    rec.wait_for(lambda n, a: n == "on_transfer" and a[0].op_id == op and a[0].stage == "receiving"
                 and a[0].bytes_done > 0, 120)
    hub.cancel(op)
    ev = _last(rec, op)
    assert ev.stage == "cancelled" and not ev.ok and "resumes" in ev.message
    assert not (repo / "big").exists()
    assert sum(f.stat().st_size for f in (repo / ".staging").rglob("*") if f.is_file()) > 0
