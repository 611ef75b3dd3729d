"""The SHA-256 digests of repository files, kept across restarts.

An ExportModel manifest carries every file's SHA-256; hashing costs about 1 s of CPU per GiB,
so a digest is remembered per resolved path together with the file's size, mtime_ns and
inode, and used only while all three still match (a changed file is hashed again). The
cache lives in `<state_dir>/digests.json`, written atomically (a temporary file, then
`os.replace`) after an export hashed something new; each write keeps only entries whose
file still exists unchanged, so the file never outgrows the repository. A missing or
damaged file only means hashing again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import threading

log = logging.getLogger(__name__)
FILE_NAME = "digests.json"
VERSION = 1
READ_BLOCK = 8 << 20


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes (hex), read in READ_BLOCK pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(READ_BLOCK):
            h.update(block)
    return h.hexdigest()


def _valid(entry) -> bool:
    return (isinstance(entry, list) and len(entry) == 4 and all(type(v) is int for v in entry[:3])
            and isinstance(entry[3], str) and len(entry[3]) == 64
            and all(c in "0123456789abcdef" for c in entry[3]))


class DigestCache:
    """`sha256(path)` answers from the cache when size, mtime and inode match, else hashes;
    `save()` writes what changed to `path`. Safe from several threads."""

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)
        self._lock = threading.Lock()        # guards _entries and _dirty
        self._save_lock = threading.Lock()   # one writer of the file at a time
        self._entries: dict[str, list] = self._load()
        self._dirty = False

    def _load(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring the digest cache %s (%s); files will be hashed again", self.path, exc)
            return {}
        files = data.get("files") if isinstance(data, dict) and data.get("version") == VERSION else None
        if not isinstance(files, dict):
            log.warning("ignoring the digest cache %s (not a version %d cache)", self.path, VERSION)
            return {}
        return {k: v for k, v in files.items() if isinstance(k, str) and _valid(v)}

    def sha256(self, path: pathlib.Path) -> str:
        key = str(pathlib.Path(path).resolve())
        stamp = _stamp(os.stat(key))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[:3] == stamp:
                return entry[3]
        digest = file_sha256(key)
        with self._lock:
            self._entries[key] = [*stamp, digest]
            self._dirty = True
        return digest

    def save(self) -> None:
        """Writes the cache if something was hashed since the last write, dropping entries
        whose file is gone or changed. A failed write is logged, never raised."""
        with self._save_lock:
            with self._lock:
                if not self._dirty:
                    return
                self._dirty = False
                entries = dict(self._entries)
            kept = {}
            for key, entry in entries.items():
                try:
                    if _stamp(os.stat(key)) == entry[:3]:
                        kept[key] = entry
                except OSError:
                    pass
            with self._lock:
                for key in entries.keys() - kept.keys():
                    if self._entries.get(key) is entries[key]:
                        del self._entries[key]
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps({"version": VERSION, "files": kept}, separators=(",", ":")))
                os.replace(tmp, self.path)
            except OSError as exc:
                log.warning("could not write the digest cache %s: %s", self.path, exc)
                tmp.unlink(missing_ok=True)
                with self._lock:
                    self._dirty = True
