"""Moving models into and out of the repository: staging, digests, resume, atomic install.

Transport-free (services/models.py speaks gRPC). An upload or pull writes into
`<repository>/.staging/<name>-<manifest digest>/` (hidden: scans skip dot-names) through one
or more lanes (a pull's parallel streams), each writing its files one at a time and in
order; each chunk is hashed on its lane's hashing thread while the next one is written (a
resumed file's staged prefix is hashed from disk first), so memory stays flat whatever the
model's size. When every file has its size and digest the staged model is renamed into the
repository in one step; a digest mismatch deletes that file's staged bytes. The staging
folder of an interrupted transfer stays, so the same manifest resumes where it stopped
(`staged_offsets`), also after a restart or a kill -9 of the daemon; start-up removes staged
transfers untouched for `models.staging_max_age_s` (`clean_staging`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import logging
import os
import pathlib
import shutil
import threading
import time
import uuid
from dataclasses import dataclass

from .digest_cache import DigestCache, file_sha256
from .engine.gguf_meta import SUFFIX as GGUF_SUFFIX
from .errors import RequestError, Status, shown

log = logging.getLogger(__name__)

STAGING = ".staging"
MAX_FILES = 10_000
MAX_DEPTH = 8
CHUNK = 1 << 20
HASHES_IN_FLIGHT = 4       # chunks written and waiting for the hashing thread
SEND_CHUNK = 1 << 20      # bytes per ExportModel message (4 MiB measured no faster; a receiver takes up to 64 MiB)
_active: set[tuple[str, str]] = set()     # (repository, name) of transfers running now
_active_lock = threading.Lock()
_install_lock = threading.Lock()


@dataclass(frozen=True)
class FileSpec:
    path: str
    size: int
    sha256: str


def check_name(name: str) -> None:
    if (not name or len(name) > 255 or "/" in name or "\\" in name or "\x00" in name
            or name.startswith(".") or name in ("..", ".")):
        raise RequestError(Status.INVALID_ARGUMENT, f"model name {shown(name)} is not allowed: use one folder "
                           "or .gguf file name without '/', '\\' or a leading '.'")


def check_manifest(name: str, files: list[FileSpec], max_bytes: int) -> None:
    check_name(name)
    if not files or len(files) > MAX_FILES:
        raise RequestError(Status.INVALID_ARGUMENT, f"a model must have 1 to {MAX_FILES} files, got {len(files)}")
    seen = set()
    for f in files:
        parts = f.path.split("/")
        if (not f.path or f.path.startswith("/") or "\\" in f.path or "\x00" in f.path or len(parts) > MAX_DEPTH
                or any(p in ("", ".", "..") or len(p) > 255 for p in parts)):
            raise RequestError(Status.INVALID_ARGUMENT, f"file name {shown(f.path)} is not allowed: relative "
                               "'/'-separated paths without '..' or empty parts only")
        if f.path in seen:
            raise RequestError(Status.INVALID_ARGUMENT, f"file {shown(f.path)} is listed twice")
        seen.add(f.path)
        if len(f.sha256) != 64 or any(c not in "0123456789abcdef" for c in f.sha256):
            raise RequestError(Status.INVALID_ARGUMENT, f"file {shown(f.path)}: sha256 must be 64 lowercase hex digits")
    total = sum(f.size for f in files)
    if total > max_bytes:
        raise RequestError(Status.INVALID_ARGUMENT, f"the model is {total:,} bytes; this node accepts at most "
                           f"{max_bytes:,} (models.max_model_bytes)")
    if name.endswith(GGUF_SUFFIX) and (len(files) != 1 or files[0].path != name):
        raise RequestError(Status.INVALID_ARGUMENT, f"a model named {shown(name)} must be that one .gguf file")


def manifest_key(name: str, files: list[FileSpec]) -> str:
    blob = json.dumps([name, [(f.path, f.size, f.sha256) for f in files]], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def staging_dir(root: pathlib.Path, name: str, files: list[FileSpec]) -> pathlib.Path:
    return root / STAGING / f"{name}-{manifest_key(name, files)}"


def staged_offsets(root: pathlib.Path, name: str, files: list[FileSpec]) -> dict[str, int]:
    """Bytes already staged of each file (a file longer than its size counts as 0)."""
    stage = staging_dir(root, name, files)
    out = {}
    for f in files:
        try:
            st = os.lstat(stage / f.path)
            out[f.path] = st.st_size if st.st_size <= f.size and not os.path.islink(stage / f.path) else 0
        except OSError:
            out[f.path] = 0
    return out


class Transfer:
    """One running upload or pull into `root` (blocking file work; call from threads).

    Bytes arrive through lanes (`lane()`): each is one ordered stream of chunks with its own
    open file, hash state and hashing thread; several lanes write different files side by
    side (a pull's parallel ExportModel streams), and a file is written by one lane at a
    time."""

    def __init__(self, root: pathlib.Path, name: str, files: list[FileSpec], *, reserve_bytes: int,
                 max_bytes: int):
        check_manifest(name, files, max_bytes)
        self.root, self.name, self.files = root, name, files
        self.by_path = {f.path: f for f in files}
        self.total = sum(f.size for f in files)
        if (root / name).exists() or (root / name).is_symlink():
            raise RequestError(Status.ALREADY_EXISTS, f"the repository already holds {shown(name)}; delete it first")
        key = (str(root), name)
        with _active_lock:
            if key in _active:
                raise RequestError(Status.ABORTED,
                                   f"another transfer of {shown(name)} into this node is running")
            _active.add(key)
        self._key = key
        try:
            self.stage = staging_dir(root, name, files)
            self.stage.mkdir(parents=True, exist_ok=True)
            self.offsets = staged_offsets(root, name, files)
            self._check_staged_files()
            need = self.total - sum(self.offsets.values())
            st = os.statvfs(root)
            free = st.f_bavail * st.f_frsize
            if free - need < reserve_bytes:
                raise RequestError(Status.RESOURCE_EXHAUSTED,
                                   f"not enough disk space: {need:,} more bytes are needed and {free:,} are free, "
                                   f"of which this node keeps {reserve_bytes:,} in reserve (models.reserve_bytes)")
        except BaseException:
            self.close()
            raise
        self.done = sum(self.offsets.values())
        self._lock = threading.Lock()          # guards done, _writing and _lanes
        self._writing: dict[str, Lane] = {}    # path -> the lane that has it open
        self._lanes: list[Lane] = []
        self._error: RequestError | None = None   # a file's digest mismatch, raised by every lane

    def _check_staged_files(self) -> None:
        """Files an earlier attempt staged whole were written, but perhaps never hashed (it
        was killed between its last byte and the check) or not synced to disk: each is hashed
        again, and one that does not match is discarded and sent again (a partly staged file
        is hashed as it is resumed, in `Lane`)."""
        for f in self.files:
            if f.size and self.offsets[f.path] == f.size and file_sha256(self.stage / f.path) != f.sha256:
                log.warning("staged file %s of %s did not match its SHA-256; it is sent again", f.path, self.name)
                (self.stage / f.path).unlink(missing_ok=True)
                self.offsets[f.path] = 0

    def lane(self) -> Lane:
        lane = Lane(self)
        with self._lock:
            self._lanes.append(lane)
        return lane

    def close(self) -> None:
        """Ends every lane's hashing thread (after what it was given) and closes their files."""
        for lane in getattr(self, "_lanes", ()):
            lane.close()
        with _active_lock:
            _active.discard(self._key)

    def _claim(self, path: str, lane: Lane) -> None:
        with self._lock:
            if self._writing.setdefault(path, lane) is not lane:
                raise RequestError(Status.ABORTED, f"file {shown(path)} arrived on two streams at once")

    def _release(self, path: str, lane: Lane) -> None:
        with self._lock:
            if self._writing.get(path) is lane:
                del self._writing[path]

    def _add(self, n: int) -> None:
        with self._lock:
            self.done += n

    def check_failed(self) -> None:
        err = self._error
        if err is not None:
            raise RequestError(err.code, err.message)

    def wait_hashed(self) -> None:
        """Every chunk written so far hashed and every finished file checked (raises the
        first mismatch)."""
        for lane in list(self._lanes):
            lane.wait_hashed()
        self.check_failed()

    def _finish_file(self, spec: FileSpec, fh, h) -> None:
        try:
            os.fsync(fh.fileno())
        finally:
            fh.close()
        digest = h.hexdigest()
        if digest != spec.sha256:
            (self.stage / spec.path).unlink(missing_ok=True)
            self.offsets[spec.path] = 0
            self._error = RequestError(
                Status.DATA_LOSS, f"file {shown(spec.path)} arrived with SHA-256 {digest[:16]}..., not the declared "
                f"{spec.sha256[:16]}... (changed during the upload, or corrupted); its bytes were discarded")
            self.check_failed()

    def complete(self) -> bool:
        return all(self.offsets[f.path] == f.size for f in self.files)

    def install(self) -> pathlib.Path:
        """Every file staged and verified: one rename puts the model into the repository."""
        self.wait_hashed()
        for f in self.files:
            if f.size == 0 and self.offsets[f.path] == 0:
                (self.stage / f.path).parent.mkdir(parents=True, exist_ok=True)
                (self.stage / f.path).touch()
                if f.sha256 != hashlib.sha256(b"").hexdigest():
                    raise RequestError(Status.INVALID_ARGUMENT, f"file {shown(f.path)} is empty but its "
                                       "declared SHA-256 is not that of no bytes")
        if not self.complete():
            missing = next(f.path for f in self.files if self.offsets[f.path] != f.size)
            raise RequestError(Status.FAILED_PRECONDITION, f"the transfer ended before file {shown(missing)} "
                               "was complete; resume it")
        dest = self.root / self.name
        src = self.stage / self.name if self.name.endswith(GGUF_SUFFIX) else self.stage
        with _install_lock:
            if dest.exists() or dest.is_symlink():
                raise RequestError(Status.ALREADY_EXISTS, f"the repository already holds {shown(self.name)}")
            os.rename(src, dest)
        shutil.rmtree(self.stage, ignore_errors=True)
        _fsync_dir(self.root)
        return dest


class Lane:
    """One ordered stream of chunks into a Transfer, written from one thread. Each chunk is
    hashed on the lane's hashing thread while the next one is written (at most
    HASHES_IN_FLIGHT chunks wait for it), so memory stays flat; a file's digest is checked,
    and the file fsync'd, on that thread once its last byte is written: a mismatch raises
    from a later write of any lane or from `Transfer.install`."""

    def __init__(self, tr: Transfer):
        self.tr = tr
        self._fh = None
        self._path = ""
        self._hash = None
        self._hasher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-hash")
        self._hashing: collections.deque = collections.deque()

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
            self._hasher = None
        self._drop()

    def _drop(self) -> None:
        """The open file stopped mid-way: it is closed and its hash dropped (a later write
        of it re-hashes the staged prefix)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._path:
            self.tr._release(self._path, self)
        self._path, self._hash = "", None

    def _open(self, path: str) -> None:
        self._drop()
        tr = self.tr
        tr._claim(path, self)
        self._path = path
        try:
            target = tr.stage / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.resolve().is_relative_to(tr.stage.resolve()):
                raise RequestError(Status.INVALID_ARGUMENT, f"file {shown(path)} would leave the staging folder")
            fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            self._fh = os.fdopen(fd, "r+b")
            h = hashlib.sha256()
            have = tr.offsets[path]
            while self._fh.tell() < have:   # hash the prefix staged by an earlier attempt
                block = self._fh.read(min(CHUNK * 8, have - self._fh.tell()))
                if not block:
                    break
                h.update(block)
            self._fh.truncate(have)
            self._fh.seek(have)
            self._hash = h
        except BaseException:
            self._drop()
            raise

    def write(self, path: str, offset: int, data: bytes) -> None:
        tr = self.tr
        tr.check_failed()
        spec = tr.by_path.get(path)
        if spec is None:
            raise RequestError(Status.INVALID_ARGUMENT, f"file {shown(path)} is not in the manifest")
        if path != self._path:
            self._open(path)
        have = tr.offsets[path]
        if offset != have:
            raise RequestError(Status.FAILED_PRECONDITION, f"file {shown(path)}: data at offset {offset:,} but the "
                               f"node holds {have:,} bytes of it; ask ImportStatus and resume from there")
        if have + len(data) > spec.size:
            raise RequestError(Status.INVALID_ARGUMENT, f"file {shown(path)} is longer than its declared "
                               f"{spec.size:,} bytes")
        self._fh.write(data)
        self._queue(self._hash.update, data)
        tr.offsets[path] = have + len(data)
        tr._add(len(data))
        if tr.offsets[path] == spec.size:
            fh, h = self._fh, self._hash
            self._fh = None
            self._drop()
            fh.flush()
            self._queue(tr._finish_file, spec, fh, h)

    def _queue(self, fn, *args) -> None:
        self._hashing.append(self._hasher.submit(fn, *args))
        while len(self._hashing) > HASHES_IN_FLIGHT or (self._hashing and self._hashing[0].done()):
            self._hashing.popleft().result()

    def wait_hashed(self) -> None:
        while self._hashing:
            self._hashing.popleft().result()


def plan_streams(files: list[FileSpec], offsets: dict[str, int], streams: int) -> list[list[str]]:
    """The files still missing bytes in at most `streams` groups of about equal bytes (the
    largest remainder first, onto the group with the fewest bytes so far); each group in
    the manifest's order. No group when nothing is missing."""
    todo = [f for f in files if offsets.get(f.path, 0) < f.size]
    groups: list[list[str]] = [[] for _ in range(max(0, min(streams, len(todo))))]
    load = [0] * len(groups)
    for f in sorted(todo, key=lambda f: f.size - offsets.get(f.path, 0), reverse=True):
        i = load.index(min(load))
        groups[i].append(f.path)
        load[i] += f.size - offsets.get(f.path, 0)
    order = {f.path: i for i, f in enumerate(files)}
    return [sorted(g, key=order.__getitem__) for g in groups]


def clean_staging(root: pathlib.Path, max_age_s: float, now: float | None = None) -> list[str]:
    """Start-up: removes what no transfer will come back for. Leftovers of deletes always;
    a staged transfer when nothing in it was written for `max_age_s` seconds (0: every one).
    A younger one stays: the same upload or pull resumes from it after a restart. Returns
    the names removed."""
    stage_root = root / STAGING
    try:
        entries = list(stage_root.iterdir())
    except OSError:
        return []
    now = time.time() if now is None else now
    removed = []
    for entry in entries:
        try:
            newest = max([entry.lstat().st_mtime] + [p.lstat().st_mtime for p in entry.rglob("*")]
                         if entry.is_dir() and not entry.is_symlink() else [entry.lstat().st_mtime])
        except OSError:
            newest = 0.0
        if entry.name.startswith("deleted-") or max_age_s <= 0 or now - newest > max_age_s:
            _remove(entry)
            removed.append(entry.name)
    return removed


def keep_chunk_buffers() -> None:
    """Once per daemon: glibc gives chunk-sized (1 MiB) blocks back to the kernel after each
    message by default (its heap top is trimmed past 2x the last freed block), so every gRPC
    message, protobuf field and bytes object of a transfer was a fresh mmap and 256 page
    faults: in a 1 GiB pull the receiver spent 2.2 s of its 3.3 s of CPU in the kernel.
    Blocks under 16 MiB now come from the heap and up to 32 MiB of free heap is kept for
    reuse (`engine.release_host_memory` still trims all of it). No-op without glibc."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 16 << 20)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 32 << 20)   # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _remove(path: pathlib.Path) -> None:
    """Deletes a folder with what it holds, or a file or link (never what a link points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(path: pathlib.Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


# -- the source side ---------------------------------------------------------------------

def model_files(root: pathlib.Path, name: str, digests: DigestCache) -> tuple[pathlib.Path, list[FileSpec]]:
    """(the folder the file paths are relative to, the files of repository entry `name`) with
    sizes and digests from `digests` (hashed only when not cached; symbolic links inside a
    model are not followed out of it)."""
    check_name(name)
    path = root / name
    if not path.exists():
        raise RequestError(Status.NOT_FOUND, f"there is no model named {shown(name)} in the repository")
    if not path.is_dir():
        spec = FileSpec(name, path.stat().st_size, digests.sha256(path))
        digests.save()
        return path.parent, [spec]
    base = path.resolve()
    found = []
    for dirpath, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            p = pathlib.Path(dirpath) / n
            if n.startswith(".") or not p.resolve().is_relative_to(base) or not p.is_file():
                continue
            found.append(p)
    with concurrent.futures.ThreadPoolExecutor(min(4, max(1, len(found)))) as pool:   # shards hash side by side
        sums = list(pool.map(digests.sha256, found))
    digests.save()
    return path, [FileSpec(str(p.relative_to(path)).replace(os.sep, "/"), p.stat().st_size, d)
                  for p, d in zip(found, sums)]


def delete_model(root: pathlib.Path, name: str) -> int:
    """Removes entry `name`: renamed away first (it vanishes from scans at once), then deleted."""
    check_name(name)
    path = root / name
    if not (path.exists() or path.is_symlink()):
        raise RequestError(Status.NOT_FOUND, f"there is no model named {shown(name)} in the repository")
    size = path.stat().st_size if not path.is_dir() else sum(
        f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    trash = root / STAGING / f"deleted-{uuid.uuid4().hex}"
    trash.parent.mkdir(exist_ok=True)
    os.rename(path, trash)
    _remove(trash)
    return size


class Rate:
    """Bytes per second over the whole transfer so far."""

    def __init__(self, start_bytes: int = 0):
        self.t0, self.b0 = time.monotonic(), start_bytes

    def __call__(self, done: int) -> float:
        dt = time.monotonic() - self.t0
        return (done - self.b0) / dt if dt > 0 else 0.0
