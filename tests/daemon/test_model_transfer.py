"""Models service between real daemons on port 0: import with digests, resume (after the
client stops, after the receiving daemon is killed -9), refusals, two uploads of one name,
pull node to node (also over several streams, and from a source that dies mid-pull), delete,
start-up cleanup of abandoned staging folders."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from musaops.daemon import model_transfer as mt
from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.daemon.devrun import ensure_token
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


def test_a_whole_file_staged_but_never_verified_is_hashed_again_on_resume(make_daemon, tmp_path, source):
    """An attempt killed between a file's last byte and its digest check (or before its bytes
    reached the disk) leaves the whole file staged, unverified: the next attempt hashes it,
    discards it on a mismatch, and the model installs only with the right bytes."""
    repo = tmp_path / "repo"
    repo.mkdir()
    d = make_daemon(models_dir=repo)
    m = manifest("resumed", source)
    first = m.files[0]
    with d.sync_channel() as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        with pytest.raises(grpc.RpcError):   # the client stops once the first file is whole
            list(stub.ImportModel(chunks(m, source, stop_after=first.size)))
        have = {o.path: o.offset for o in stub.ImportStatus(m).present}
        assert have[first.path] == first.size
        staged = next(p for p in (repo / mt.STAGING).rglob(first.path) if p.is_file())
        data = bytearray(staged.read_bytes())
        data[len(data) // 2] ^= 0xFF
        staged.write_bytes(bytes(data))       # same size, other bytes: what a lost write leaves
        code, msg = status_code(lambda: list(stub.ImportModel(chunks(m, source, offsets=have))))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and first.path in msg, msg
        assert not (repo / "resumed").exists()
        have = {o.path: o.offset for o in stub.ImportStatus(m).present}
        assert have[first.path] == 0, "the damaged file was discarded"
        assert list(stub.ImportModel(chunks(m, source, offsets=have)))[-1].stage == models_pb2.TRANSFER_STAGE_DONE
    for f in m.files:
        assert (repo / "resumed" / f.path).read_bytes() == (source / f.path).read_bytes()


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


def exported_digests(d, model: str) -> dict[str, str]:
    with d.sync_channel() as ch:
        first = next(iter(models_pb2_grpc.ModelsStub(ch).ExportModel(
            models_pb2.ExportRequest(model=model, manifest_only=True))))
    return {f.path: f.sha256 for f in first.manifest.files}


def test_export_digests_survive_a_restart_of_the_source(make_daemon, tmp_path, source):
    repo, state = tmp_path / "src", tmp_path / "src-state"
    model = repo / "m"
    model.mkdir(parents=True)
    for f in source.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    (model / "extra.bin").write_bytes(b"extra")
    truth = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in model.iterdir()}
    cache_file = state / "digests.json"
    src = make_daemon(models_dir=repo, **{"storage.state_dir": str(state)})
    assert exported_digests(src, "m") == truth
    cached = json.loads(cache_file.read_text())["files"]
    weights = str((model / "model.safetensors").resolve())
    st = os.stat(weights)
    assert cached[weights] == [st.st_size, st.st_mtime_ns, st.st_ino, truth["model.safetensors"]]
    assert set(cached) == {str(p.resolve()) for p in model.iterdir()}
    src.stop()
    # the restarted source answers from the file: a planted digest proves nothing was re-hashed
    cached[weights][3] = "0" * 64
    cache_file.write_text(json.dumps({"version": 1, "files": cached}))
    src = make_daemon(models_dir=repo, **{"storage.state_dir": str(state)})
    assert exported_digests(src, "m")["model.safetensors"] == "0" * 64
    # a touched file (new mtime) is hashed again; a vanished file leaves the cache when it is written
    (model / "extra.bin").unlink()
    del truth["extra.bin"]
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert exported_digests(src, "m") == truth
    cached = json.loads(cache_file.read_text())["files"]
    assert cached[weights][1:] == [st.st_mtime_ns + 1_000_000_000, st.st_ino, truth["model.safetensors"]]
    assert set(cached) == {str(p.resolve()) for p in model.iterdir()}
    # and a pull from it verifies every digest
    dst_repo = tmp_path / "dst"
    dst_repo.mkdir()
    dst = make_daemon(models_dir=dst_repo)
    with dst.sync_channel() as ch:
        progress = list(models_pb2_grpc.ModelsStub(ch).PullModel(models_pb2.PullRequest(source=src.address, model="m")))
    assert progress[-1].stage == models_pb2.TRANSFER_STAGE_DONE
    assert (dst_repo / "m" / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()


def test_a_damaged_digest_cache_means_hashing_again(make_daemon, tmp_path, source):
    state = tmp_path / "state"
    state.mkdir()
    (state / "digests.json").write_text("{not json")
    src = make_daemon(**{"storage.state_dir": str(state)})
    assert exported_digests(src, DEMO_MODEL_NAME)["config.json"] == hashlib.sha256(
        (source / "config.json").read_bytes()).hexdigest()
    assert json.loads((state / "digests.json").read_text())["version"] == 1


# -- a daemon as a child process (killed -9), concurrency, a source that goes away ---------

MUSAD = [sys.executable, "-m", "musaops.daemon.cli"]


class Child:
    """`musad serve` in a child process on port 0 with its own state and repository."""

    def __init__(self, state: pathlib.Path, models: pathlib.Path):
        self.state, self.models = state, models
        models.mkdir(parents=True, exist_ok=True)
        self.md = (("authorization", f"Bearer {ensure_token(state).read_text().strip()}"),)
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            MUSAD + ["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--http-listen", "",
                     "--state-dir", str(self.state), "--models", str(self.models), "--device", "cpu"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        for line in self.proc.stderr:   # the daemon logs its port once it serves
            m = re.search(r"serving on port (\d+)", line)
            if m:
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()   # keep draining
                self.address = f"127.0.0.1:{m.group(1)}"
                return
        raise AssertionError(f"musad serve exited ({self.proc.wait()}) before serving")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def children(tmp_path):
    made: list[Child] = []

    def make(name: str) -> Child:
        c = Child(tmp_path / name / "state", tmp_path / name / "models")
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()


def big_model(folder: pathlib.Path, mib: int) -> pathlib.Path:
    """A folder of `mib` MiB (a sparse weights file: cheap to write and to hash)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    with open(folder / "model.safetensors", "wb") as fh:
        fh.write(b"head")
        fh.truncate(mib << 20)
    return folder


def staged(stub, m, md=None) -> int:
    return sum(o.offset for o in stub.ImportStatus(m, metadata=md).present)


@pytest.mark.timeout(240)
def test_resume_after_the_receiving_daemon_is_killed_9_mid_file(children, tmp_path):
    src = big_model(tmp_path / "src" / "weights", 8)
    m = manifest("weights", src)
    node = children("node")
    gate = threading.Event()

    def held_chunks():   # the client sends 2 MiB and then waits (the daemon dies meanwhile)
        for i, msg in enumerate(chunks(m, src)):
            if i * CHUNK > 2 << 20:
                gate.wait(60)
                return
            yield msg
    with grpc.insecure_channel(node.address) as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        call = stub.ImportModel(held_chunks(), metadata=node.md)
        deadline = time.monotonic() + 60
        while staged(stub, m, node.md) < 1 << 20:   # mid-file: bytes on disk, the file incomplete
            assert time.monotonic() < deadline, "the upload did not start"
            time.sleep(0.05)
        node.kill9()
        gate.set()
        with pytest.raises(grpc.RpcError):
            list(call)
    assert not (node.models / "weights").exists()
    node.start()   # same state and repository, a new port
    with grpc.insecure_channel(node.address) as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        have = {o.path: o.offset for o in stub.ImportStatus(m, metadata=node.md).present}
        assert 1 << 20 <= sum(have.values()) < 8 << 20, have
        progress = list(stub.ImportModel(chunks(m, src, offsets=have), metadata=node.md))
        assert progress[0].bytes_done == sum(have.values()) and progress[-1].stage == models_pb2.TRANSFER_STAGE_DONE
    for f in m.files:
        assert hashlib.sha256((node.models / "weights" / f.path).read_bytes()).hexdigest() == f.sha256
    assert not list((node.models / ".staging").iterdir())


def test_two_uploads_of_the_same_name_one_is_aborted(make_daemon, tmp_path, source):
    repo = tmp_path / "repo"
    repo.mkdir()
    d = make_daemon(models_dir=repo)
    m = manifest("same", source)
    gate = threading.Event()

    def held_chunks():
        it = chunks(m, source)
        yield next(it)   # the header: the first transfer holds the name from here on
        gate.wait(60)
        yield from it
    with d.sync_channel() as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        first = stub.ImportModel(held_chunks())
        assert next(first).stage == models_pb2.TRANSFER_STAGE_RECEIVING   # its transfer is open
        code, msg = status_code(lambda: list(stub.ImportModel(chunks(m, source))))
        assert code == grpc.StatusCode.ABORTED and "another transfer" in msg
        gate.set()
        assert list(first)[-1].stage == models_pb2.TRANSFER_STAGE_DONE
    for f in m.files:
        assert (repo / "same" / f.path).read_bytes() == (source / f.path).read_bytes()


def _pull_while_the_source_dies(stub, src, model: str, token: str) -> grpc.RpcError:
    """Pulls `model` from the child `src` and kills it (SIGKILL) once bytes have arrived;
    returns the error the pull ended with."""
    call = stub.PullModel(models_pb2.PullRequest(source=src.address, model=model, token=token))
    with pytest.raises(grpc.RpcError) as ei:
        for p in call:
            if p.bytes_done > 0:   # bytes arrived: the source dies mid-pull
                src.kill9()
    return ei.value


@pytest.mark.timeout(240)
def test_a_source_that_goes_away_mid_pull_then_resumes(children, make_daemon, tmp_path):
    src = children("source")
    big_model(src.models / "weights", 256)
    dst_repo = tmp_path / "dst"
    dst_repo.mkdir()
    dst = make_daemon(models_dir=dst_repo)
    token = src.md[0][1].removeprefix("Bearer ")
    with dst.sync_channel() as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        error = _pull_while_the_source_dies(stub, src, "weights", token)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert "source node" in error.details() and "staged" in error.details()
        assert not (dst_repo / "weights").exists()
        src.start()
        progress = list(stub.PullModel(models_pb2.PullRequest(source=src.address, model="weights", token=token)))
        assert progress[0].bytes_done > 0, "the second pull started over instead of resuming"
        assert progress[-1].stage == models_pb2.TRANSFER_STAGE_DONE
    assert (dst_repo / "weights" / "model.safetensors").stat().st_size == 256 << 20
    assert not list((dst_repo / ".staging").iterdir())


def test_streams_are_balanced_by_bytes():
    files = [mt.FileSpec(p, size, "0" * 64) for p, size in
             (("config.json", 10), ("a", 300), ("b", 200), ("c", 100), ("d", 100), ("empty", 0))]
    assert mt.plan_streams(files, {}, 3) == [["a"], ["config.json", "b"], ["c", "d"]]
    assert mt.plan_streams(files, {"a": 250, "b": 200}, 4) == [["c"], ["d"], ["a"], ["config.json"]]
    assert mt.plan_streams(files[1:2], {}, 4) == [["a"]]   # one file: one stream
    assert mt.plan_streams(files, {f.path: f.size for f in files}, 4) == []


def test_a_multi_file_pull_over_several_streams(make_daemon, tmp_path):
    src_repo, dst_repo = tmp_path / "src", tmp_path / "dst"
    model = src_repo / "shards"
    model.mkdir(parents=True)
    dst_repo.mkdir()
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    for i, mib in enumerate((3, 2, 1, 1)):
        (model / f"model-{i}.safetensors").write_bytes(os.urandom(mib << 20))
    src = make_daemon(models_dir=src_repo)
    dst = make_daemon(models_dir=dst_repo, **{"models.pull_streams": 3})
    with dst.sync_channel() as ch:
        progress = list(models_pb2_grpc.ModelsStub(ch).PullModel(models_pb2.PullRequest(source=src.address,
                                                                                        model="shards")))
    assert progress[-1].stage == models_pb2.TRANSFER_STAGE_DONE
    assert progress[-1].bytes_done == progress[-1].bytes_total == sum(f.stat().st_size for f in model.iterdir())
    for f in model.iterdir():
        assert (dst_repo / "shards" / f.name).read_bytes() == f.read_bytes()
    assert not list((dst_repo / ".staging").iterdir())
    # the source sent three streams (manifest_only aside), each a disjoint share of the files
    sent = [json.loads(r.params_json).get("sent_files") for r in src.ctx.audit.query()
            if r.action == "models.ExportModel"]
    assert sorted(sent) == [1, 2, 2], sent
    with src.sync_channel() as ch:   # a stream that asks for a file the model lacks is refused
        code, msg = status_code(lambda: list(models_pb2_grpc.ModelsStub(ch).ExportModel(
            models_pb2.ExportRequest(model="shards", paths=["nope.bin"]))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "nope.bin" in msg
    # a shard changed in place with its mtime put back: the source sends its cached digest with
    # new bytes, that stream's file fails its check and the whole pull ends DATA_LOSS
    shard = model / "model-1.safetensors"
    st = shard.stat()
    with open(shard, "r+b") as fh:
        fh.seek(1 << 20)
        flipped = bytes(b ^ 1 for b in fh.read(2))
        fh.seek(1 << 20)
        fh.write(flipped)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    with src.sync_channel() as ch:   # what the source declares (its cached digests)
        declared = next(iter(models_pb2_grpc.ModelsStub(ch).ExportModel(
            models_pb2.ExportRequest(model="shards", manifest_only=True)))).manifest
    with dst.sync_channel() as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        stub.DeleteModel(models_pb2.DeleteModelRequest(model="shards"))
        code, msg = status_code(lambda: list(stub.PullModel(models_pb2.PullRequest(source=src.address,
                                                                                   model="shards"))))
        assert code == grpc.StatusCode.DATA_LOSS and "model-1.safetensors" in msg, msg
        assert not (dst_repo / "shards").exists()
        have = {o.path: o.offset for o in stub.ImportStatus(declared).present}
        assert have["model-1.safetensors"] == 0, have   # its bad bytes were discarded


@pytest.mark.timeout(240)
def test_a_source_that_goes_away_mid_pull_over_several_streams_then_resumes(children, make_daemon, tmp_path):
    src = children("source")
    folder = big_model(src.models / "shards", 1)
    for i in range(4):   # four sparse 64 MiB shards: each stream has one
        with open(folder / f"model-{i}.safetensors", "wb") as fh:
            fh.write(bytes([i + 1]))
            fh.truncate(64 << 20)
    m = manifest("shards", folder)
    dst_repo = tmp_path / "dst"
    dst_repo.mkdir()
    dst = make_daemon(models_dir=dst_repo, **{"models.pull_streams": 4})
    token = src.md[0][1].removeprefix("Bearer ")
    with dst.sync_channel() as ch:
        stub = models_pb2_grpc.ModelsStub(ch)
        error = _pull_while_the_source_dies(stub, src, "shards", token)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert not (dst_repo / "shards").exists()
        have = sum(o.offset for o in stub.ImportStatus(m).present)
        assert 0 < have < sum(f.size for f in m.files)
        src.start()
        progress = list(stub.PullModel(models_pb2.PullRequest(source=src.address, model="shards", token=token)))
        assert progress[0].bytes_done == have, "the second pull did not resume from the staged bytes"
        assert progress[-1].stage == models_pb2.TRANSFER_STAGE_DONE
        assert progress[-1].bytes_done == progress[-1].bytes_total
    for f in m.files:
        assert hashlib.sha256((dst_repo / "shards" / f.path).read_bytes()).hexdigest() == f.sha256
    assert not list((dst_repo / ".staging").iterdir())


def test_start_up_removes_only_abandoned_staging(make_daemon, tmp_path, source):
    repo = tmp_path / "repo"
    stage = repo / ".staging"
    old, young, trash = stage / "old-0123456789abcdef", stage / "young-0123456789abcdef", stage / "deleted-x"
    for folder in (old, young, trash):
        folder.mkdir(parents=True)
        (folder / "part").write_bytes(b"x" * 10)
    week_ago = time.time() - 8 * 86400
    for p in (old / "part", old):
        os.utime(p, (week_ago, week_ago))
    make_daemon(models_dir=repo)   # default models.staging_max_age_s: 7 days
    assert sorted(p.name for p in stage.iterdir()) == [young.name]
    make_daemon(models_dir=repo, **{"models.staging_max_age_s": 0})
    assert not list(stage.iterdir())
