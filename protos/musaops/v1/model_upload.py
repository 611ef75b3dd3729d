"""Uploading a model from local files: the manifest (each file's path, size and SHA-256) and
ImportModel's message stream. Hand-written, beside the generated modules, because both
clients use it (the shell's `musad import`, the console's "Add model…") and neither may
import the other. Pure Python, no gRPC channel: the caller sends the messages.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

from . import models_pb2

CHUNK = 1 << 20
SUFFIX = ".gguf"


class UploadError(ValueError):
    """A local path that cannot be uploaded (a sentence for the operator)."""


def local_files(path: Path, name: str) -> list[tuple[str, Path]]:
    """(manifest path, local file) of a model folder (hidden files skipped) or one .gguf."""
    if not path.exists():
        raise UploadError(f"{path} does not exist.")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise UploadError(f"{path} holds no files.")
        return [(str(p.relative_to(path)).replace(os.sep, "/"), p) for p in files]
    if not path.name.endswith(SUFFIX):
        raise UploadError(f"{path} is a file but not a .gguf; import a model folder or one .gguf file.")
    return [(name, path)]


def local_manifest(path: Path, name: str, progress: Callable[[int, int], None] | None = None,
                   cancelled: Callable[[], bool] | None = None) -> models_pb2.ModelManifest:
    """The manifest of `path` under repository name `name`; progress(bytes hashed, total)."""
    entries = local_files(path, name)
    total, done = sum(p.stat().st_size for _, p in entries), 0
    out = models_pb2.ModelManifest(name=name)
    for rel, p in entries:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while block := fh.read(8 * CHUNK):
                if cancelled is not None and cancelled():
                    raise UploadError("cancelled while hashing")
                h.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
        out.files.append(models_pb2.FileEntry(path=rel, size=p.stat().st_size, sha256=h.hexdigest()))
    return out


def upload_chunks(manifest: models_pb2.ModelManifest, base: Path,
                  offsets: dict[str, int]) -> Iterator[models_pb2.ImportChunk]:
    """ImportModel's messages: the header, then each file from the node's offset on."""
    yield models_pb2.ImportChunk(header=manifest)
    for f in manifest.files:
        off = offsets.get(f.path, 0)
        if off >= f.size:
            continue
        with open(base if base.is_file() else base / f.path, "rb") as fh:
            fh.seek(off)
            while off < f.size:
                data = fh.read(min(CHUNK, f.size - off))
                if not data:
                    raise UploadError(f"{f.path} shrank while it was uploaded; import it again.")
                yield models_pb2.ImportChunk(data=models_pb2.FileData(path=f.path, offset=off, data=data))
                off += len(data)
