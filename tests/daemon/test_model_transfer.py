"""Models service between real daemons on port 0: import with digests, resume, refusals,
pull node to node, delete."""

from __future__ import annotations

import hashlib
import pathlib

import grpc
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import models_pb2, models_pb2_grpc, node_pb2, node_pb2_grpc

pytestmark = pytest.mark.timeout(120)
CHUNK = 64 * 1024


def manifest(name: str, folder: pathlib.Path, *, single: bool = False) -> models_pb2.ModelManifest:
    files = [folder] if single else sorted(p for p in folder.rglob("*") if p.is_file())
    return models_pb2.ModelManifest(name=name, files=[
        models_pb2.FileEntry(path=name if single else str(p.relative_to(folder)), size=p.stat().st_size,
                             sha256=hashlib.sha256(p.read_bytes()).hexdigest()) for p in files])


def chunks(m: models_pb2.ModelManifest, base: pathlib.Path, offsets=None, stop_after=None, tamper=None):
    yield models_pb2.ImportChunk(header=m)
    sent = 0
    for f in m.files:
        data = (base if base.is_file() else base / f.path).read_bytes()
        if tamper:
            data = tamper(f.path, data)
        off = (offsets or {}).get(f.path, 0)
        while off < len(data):
            if stop_after is not None and sent >= stop_after:
                return
            piece = data[off:off + CHUNK]
            yield models_pb2.ImportChunk(data=models_pb2.FileData(path=f.path, offset=off, data=piece))
            off += len(piece)
            sent += len(piece)


def status_code(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value.code(), ei.value.details()


@pytest.fixture
def source(demo_model_dir):
    return demo_model_dir


def test_import_resume_and_list(make_daemon, tmp_path, source):
    d = make_daemon(models_dir=tmp_path / "repo")
    (tmp_path / "repo").mkdir(exist_ok=True)
    m = manifest("copied", source)
    with d.sync_channel() as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        # the client stops after 200 kB (killed mid-file): the upload fails, the model is absent
        with pytest.raises(grpc.RpcError) as ei:
            list(stub.ImportModel(chunks(m, source, stop_after=200_000)))
        assert "ended before" in ei.value.details()
        assert not (tmp_path / "repo" / "copied").exists()
        st = stub.ImportStatus(m)
        have = {o.path: o.offset for o in st.present}
        assert 0 < sum(have.values()) <= 200_000 + CHUNK and st.free_bytes > 0
        # resume from what the node holds: the rest only
        progress = list(stub.ImportModel(chunks(m, source, offsets=have)))
        assert progress[0].bytes_done == sum(have.values())
        assert progress[-1].stage == models_pb2.TRANSFER_STAGE_DONE
        for f in m.files:
            assert (tmp_path / "repo" / "copied" / f.path).read_bytes() == (source / f.path).read_bytes()
        listed = {x.name: x for x in node_pb2_grpc.NodeStub(ch).ListModels(node_pb2.ListModelsRequest()).models}
        assert listed["copied"].state != 0 and not listed["copied"].reason
        # importing it again: ALREADY_EXISTS
        code, _ = status_code(lambda: list(stub.ImportModel(chunks(m, source))))
        assert code == grpc.StatusCode.ALREADY_EXISTS


def test_refusals(make_daemon, tmp_path, source):
    repo = tmp_path / "repo"
    repo.mkdir()
    d = make_daemon(models_dir=repo, **{"models.reserve_bytes": 1 << 62})
    with d.sync_channel() as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        m = manifest("x", source)
        code, msg = status_code(lambda: list(stub.ImportModel(chunks(m, source))))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "disk space" in msg
        for bad_name, bad_path in (("../evil", "config.json"), ("ok", "../../etc/passwd"), ("ok", "/abs"),
                                   (".hidden", "a"), ("ok", "a/../../b")):
            bm = models_pb2.ModelManifest(name=bad_name, files=[models_pb2.FileEntry(
                path=bad_path, size=1, sha256="0" * 64)])
            code, msg = status_code(lambda: list(stub.ImportModel(iter([models_pb2.ImportChunk(header=bm)]))))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (bad_name, bad_path, msg)
        assert not any(repo.rglob("passwd")) and not (tmp_path / "evil").exists()


def test_digest_mismatch_leaves_nothing(make_daemon, tmp_path, source):
    repo = tmp_path / "repo"
    repo.mkdir()
    d = make_daemon(models_dir=repo)
    m = manifest("changed", source)
    flip = lambda path, data: data[:-1] + bytes([data[-1] ^ 1]) if path == "model.safetensors" else data  # noqa: E731
    with d.sync_channel() as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        code, msg = status_code(lambda: list(stub.ImportModel(chunks(m, source, tamper=flip))))
        assert code == grpc.StatusCode.DATA_LOSS and "SHA-256" in msg
        assert not (repo / "changed").exists()
        have = {o.path: o.offset for o in stub.ImportStatus(m).present}
        assert have["model.safetensors"] == 0   # the bad bytes were discarded


def test_pull_between_nodes_delete_and_auth(make_daemon, tmp_path, source):
    src = make_daemon()   # holds the demo model
    dst_repo = tmp_path / "dst"
    dst_repo.mkdir()
    dst = make_daemon(models_dir=dst_repo)
    with dst.sync_channel() as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        progress = list(stub.PullModel(models_pb2.PullRequest(source=src.address, model=DEMO_MODEL_NAME)))
        assert progress[-1].stage == models_pb2.TRANSFER_STAGE_DONE
        for f in source.rglob("*"):
            if f.is_file():
                assert (dst_repo / DEMO_MODEL_NAME / f.relative_to(source)).read_bytes() == f.read_bytes()
        code, msg = status_code(lambda: list(stub.PullModel(models_pb2.PullRequest(source=src.address, model="nope"))))
        assert code == grpc.StatusCode.NOT_FOUND
        # deployed: delete refused; undeployed: deleted
        node = node_pb2_grpc.NodeStub(ch)
        events = list(node.Deploy(node_pb2.DeployRequest(model=DEMO_MODEL_NAME, dtype="float32", max_batch=1,
                                                         max_context=64)))
        assert events[-1].stage == node_pb2.DEPLOY_STAGE_READY
        code, msg = status_code(lambda: stub.DeleteModel(models_pb2.DeleteModelRequest(model=DEMO_MODEL_NAME)))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "undeploy" in msg
        node.Undeploy(node_pb2.UndeployRequest(model=DEMO_MODEL_NAME))
        freed = stub.DeleteModel(models_pb2.DeleteModelRequest(model=DEMO_MODEL_NAME)).freed_bytes
        assert freed > 0 and not (dst_repo / DEMO_MODEL_NAME).exists()
        records = {(r.action, r.outcome) for r in dst.ctx.audit.query()}
        assert {("models.PullModel", "ok"), ("models.PullModel", "failed"), ("models.DeleteModel", "ok"),
                ("models.DeleteModel", "failed")} <= records


def test_pull_with_a_bad_credential_is_refused(make_daemon, tmp_path):
    src = make_daemon(**{"auth.required": True})
    dst_repo = tmp_path / "dst"
    dst_repo.mkdir()
    dst = make_daemon(models_dir=dst_repo)
    with dst.sync_channel() as ch:
        code, msg = status_code(lambda: list(models_pb2_grpc.ModelsStub(ch).PullModel(models_pb2.PullRequest(
            source=src.address, model=DEMO_MODEL_NAME, token="not-a-token"))))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "UNAUTHENTICATED" in msg
        assert not (dst_repo / DEMO_MODEL_NAME).exists()
