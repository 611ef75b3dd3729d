"""The model repository: HF-format folders under `models.dir`, described without loading weights.

Each sub-folder is one model, named by the folder. Facts come from config.json and the
safetensors headers (the 8-byte length and the JSON header only; weights are never read).
A broken folder is listed with `error` set to a sentence; scanning never raises for one.
Scans are cached per folder by the (name, size, mtime) of its files, so ListModels may
rescan on every call.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import struct
import threading
from dataclasses import dataclass

from .engine import gguf_meta, models

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# safetensors dtype tags -> bytes per element
_ST_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
_MAX_HEADER = 100 * 1024 * 1024  # a larger safetensors header is not a real one
_MAX_JSON = 64 * 1024 * 1024     # nor is a larger config.json or index
_MAX_CONFIG_INT = 2**31 - 1      # sizes in config.json (proto fields are uint32)
INDEX_FILE = "model.safetensors.index.json"


class ModelFolderError(Exception):
    """Why a folder is not a usable model (the message is shown to operators)."""


@dataclass(frozen=True)
class MemoryEstimate:
    dtype: str
    weights_bytes: int
    kv_bytes_per_token: int
    total_bytes: int  # weights + KV for one full context window


@dataclass(frozen=True)
class ModelEntry:
    """One repository folder. When `error` is set the other facts may be partial (zero)."""

    name: str
    path: pathlib.Path
    size_bytes: int
    error: str = ""
    architecture: str = ""
    parameters: int = 0
    torch_dtype: str = ""
    num_layers: int = 0
    hidden_size: int = 0
    vocab_size: int = 0
    num_attention_heads: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    max_position_embeddings: int = 0
    estimates: tuple[MemoryEstimate, ...] = ()
    quantization: str = ""   # GGUF files: e.g. "Q4_1" (engine/gguf_meta); "" for safetensors
    notice: str = ""         # config.json "musaops_notice": shown beside the model (demo_model.py)

    @property
    def ok(self) -> bool:
        return not self.error

    def kv_bytes_per_token(self, dtype: str) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * DTYPE_BYTES[dtype]


class ModelRepository:
    """Scans `root` for model folders; thread-safe; cheap to call repeatedly."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = pathlib.Path(root)
        self._cache: dict[str, tuple[tuple, ModelEntry]] = {}
        self._lock = threading.Lock()

    def problem(self) -> str:
        """Why the repository folder itself is unusable (a sentence), or "" when it is fine."""
        try:
            if not self.root.exists():
                return "the folder does not exist"
            if not self.root.is_dir():
                return "it is a file, not a folder"
            next(os.scandir(self.root), None)
        except OSError as exc:
            return f"it cannot be read: {exc.strerror or exc}"
        return ""

    def free_bytes(self) -> int:
        """Free bytes of the repository's file system for an unprivileged writer (0 when unknown)."""
        try:
            st = os.statvfs(self.root)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def scan(self) -> list[ModelEntry]:
        """Every model folder, sorted by name. A missing or unreadable root gives an empty
        list (see `problem()`); plain files in the root are not models and are skipped.
        Symbolic links to folders are followed (out of the repository only to a model
        folder: see `_link_out`); a dangling one is listed as ERROR."""
        try:
            folders = sorted(p for p in self.root.iterdir()
                             if not p.name.startswith(".") and (p.is_dir() or p.is_symlink()
                                                                or p.name.endswith(gguf_meta.SUFFIX)))
        except OSError:
            folders = []
        entries = []
        with self._lock:
            seen = set()
            for folder in folders:
                seen.add(folder.name)
                sig = _signature(folder)
                cached = self._cache.get(folder.name)
                if cached is None or cached[0] != sig:
                    cached = (sig, describe_folder(folder))
                    self._cache[folder.name] = cached
                entries.append(cached[1])
            for gone in set(self._cache) - seen:
                del self._cache[gone]
        return entries

    def get(self, name: str) -> ModelEntry | None:
        """The entry for `name` (freshly checked), or None when no such folder exists.
        Looks at that one folder only (a few stat calls when unchanged)."""
        if not name or "/" in name or "\x00" in name or name.startswith("."):
            return None
        if "\ufffd" in name:  # maybe the shown form of a name that is not UTF-8: look at all
            return next((e for e in self.scan() if e.name == name), None)
        folder = self.root / name
        try:
            # a folder, a .gguf file, or a link (a dangling one is listed as ERROR)
            candidate = folder.is_symlink() or folder.is_dir() or (
                name.endswith(gguf_meta.SUFFIX) and folder.is_file())
            if not candidate or folder.parent != self.root:
                return None
        except (OSError, ValueError):  # e.g. a name too long for the file system
            return None
        with self._lock:
            sig = _signature(folder)
            cached = self._cache.get(name)
            if cached is None or cached[0] != sig:
                cached = (sig, describe_folder(folder))
                self._cache[name] = cached
            return cached[1]


def _signature(folder: pathlib.Path) -> tuple:
    items = []
    if not folder.is_dir():   # a model that is one file (.gguf)
        try:
            st = folder.stat()
            return ((folder.name, st.st_size, st.st_mtime_ns),)
        except OSError:
            return ()
    try:
        for f in os.scandir(folder):
            try:
                st = f.stat()
            except OSError:
                continue
            items.append((f.name, st.st_size, st.st_mtime_ns))
    except OSError:
        pass
    return tuple(sorted(items))


def _folder_bytes(folder: pathlib.Path) -> int:
    if not folder.is_dir():
        try:
            return folder.stat().st_size
        except OSError:
            return 0
    total = 0
    for dirpath, _dirs, files in os.walk(folder):   # links to folders below are not entered
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _link_out(folder: pathlib.Path) -> str:
    """Why a symbolic link in the repository is not followed (a sentence), or "". A link may
    lead out of the repository only to a model: a folder holding config.json, or a .gguf
    file; a link to anything else (/, /etc) is neither walked nor measured."""
    if not folder.is_symlink():
        return ""
    try:
        target = folder.resolve(strict=True)
        root = folder.parent.resolve(strict=True)
    except (OSError, RuntimeError):
        return ""   # dangling or looping: _describe says so
    if target == root or root in target.parents:
        return ""
    if (target.is_dir() and (target / "config.json").is_file()) or (
            target.is_file() and target.name.endswith(gguf_meta.SUFFIX)):
        return ""
    return (f"the symbolic link leads out of the repository to {target}, which is not a model folder "
            "(none holds config.json); link the model's own folder instead")


def describe_folder(folder: pathlib.Path) -> ModelEntry:
    """Reads one folder into a ModelEntry; a problem becomes `error`, never an exception."""
    if why := _link_out(folder):
        return _printable(ModelEntry(name=folder.name, path=folder, size_bytes=0, error=why))
    size = _folder_bytes(folder)
    try:
        entry = _describe(folder, size)
    except ModelFolderError as exc:
        entry = ModelEntry(name=folder.name, path=folder, size_bytes=size, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a broken folder must never stop a scan
        entry = ModelEntry(name=folder.name, path=folder, size_bytes=size, error=f"unreadable model folder: {exc}")
    return _printable(entry)


def _clean(text: str) -> str:
    """`text` as valid UTF-8 (protobuf refuses lone surrogates from odd file names or JSON):
    each byte a file name held that is not UTF-8, and each lone surrogate, becomes U+FFFD."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def _printable(entry: ModelEntry) -> ModelEntry:
    """An entry whose strings protobuf accepts; a folder named in bytes that are not UTF-8
    is an ERROR (no RPC could name it)."""
    name, error = _clean(entry.name), _clean(entry.error)
    if name != entry.name:
        error = "the folder name is not valid UTF-8; rename the folder"
    if (name, error, entry.architecture, entry.torch_dtype) == (entry.name, entry.error,
                                                                 _clean(entry.architecture), _clean(entry.torch_dtype)):
        return entry
    return _replace(entry, name=name, error=error, architecture=_clean(entry.architecture),
                    torch_dtype=_clean(entry.torch_dtype))


def _describe(folder: pathlib.Path, size: int) -> ModelEntry:
    try:
        gguf = gguf_meta.gguf_file(folder)
        if gguf is not None:
            return _describe_gguf(folder, gguf_meta.inspect_gguf(gguf), size)
    except gguf_meta.GGUFError as exc:
        raise ModelFolderError(str(exc)) from None
    if folder.is_symlink() and not folder.is_dir():
        raise ModelFolderError(f"the symbolic link points to {os.readlink(folder)}, which is not a folder")
    cfg = _read_json(folder / "config.json")
    _read_json(folder / "tokenizer.json")   # a broken one fails Deploy: say so now

    def field(*keys: str, required: bool = True) -> int:
        for k in keys:
            v = cfg.get(k)
            if v is not None:
                if not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= _MAX_CONFIG_INT:
                    raise ModelFolderError(f"config.json: {k!r} must be a positive integer up to {_MAX_CONFIG_INT}, "
                                           f"got {repr(v)[:40]}")
                return v
        if required:
            raise ModelFolderError(f"config.json lacks {keys[0]!r}")
        return 0

    hidden = field("hidden_size")
    layers = field("num_hidden_layers")
    heads = field("num_attention_heads")
    kv_heads = field("num_key_value_heads", required=False) or heads
    vocab = field("vocab_size")
    head_dim = field("head_dim", required=False) or hidden // heads
    max_pos = field("max_position_embeddings", required=False)
    arch = _architecture(cfg)
    dtype = cfg.get("torch_dtype") or cfg.get("dtype") or ""
    notice = cfg.get("musaops_notice") if isinstance(cfg.get("musaops_notice"), str) else ""

    params = sum(safetensors_parameters(f) for f in _weight_files(folder))
    entry = ModelEntry(
        name=folder.name, path=folder, size_bytes=size, architecture=arch, parameters=params,
        torch_dtype=str(dtype), num_layers=layers, hidden_size=hidden, vocab_size=vocab,
        num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        max_position_embeddings=max_pos, notice=notice[:500],
    )
    estimates = _estimates(entry, params, max_pos)
    _check_weights_match_config(cfg, params)
    return _replace(entry, estimates=estimates)


def _estimates(entry: ModelEntry, params: int, max_pos: int) -> tuple[MemoryEstimate, ...]:
    """Weights, KV cache per token and the total at `max_pos` tokens, for each dtype."""
    estimates = []
    for dt, nbytes in DTYPE_BYTES.items():
        kv = entry.kv_bytes_per_token(dt)
        weights = params * nbytes
        if weights + kv * max_pos >= 2**64:
            raise ModelFolderError("config.json sizes give a memory estimate beyond 2^64 bytes; they cannot be right")
        estimates.append(MemoryEstimate(dt, weights, kv, weights + kv * max_pos))
    return tuple(estimates)


def _describe_gguf(path: pathlib.Path, g: gguf_meta.GGUFModel, size: int) -> ModelEntry:
    """A GGUF model: facts from its metadata; estimates for the dtypes it dequantizes to."""
    c = g.config
    entry = ModelEntry(
        name=path.name, path=path, size_bytes=size, architecture=g.hf_name, parameters=g.parameters,
        torch_dtype=g.checkpoint_dtype, num_layers=c.num_layers, hidden_size=c.hidden_size,
        vocab_size=c.vocab_size, num_attention_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
        head_dim=c.head_dim, max_position_embeddings=c.max_position_embeddings, quantization=g.quantization)
    return _replace(entry, estimates=_estimates(entry, g.parameters, c.max_position_embeddings))


def _architecture(cfg: dict) -> str:
    """The config's architecture name, when the engine's registry runs it."""
    archs = cfg.get("architectures")
    if not isinstance(archs, list) or not any(isinstance(a, str) and a for a in archs):
        raise ModelFolderError("config.json lacks 'architectures'")
    try:
        name, _family = models.resolve_hf(cfg)
    except models.UnsupportedArchitecture as exc:
        raise ModelFolderError(f"config.json: {exc}") from None
    return name


def _check_weights_match_config(cfg: dict, params: int) -> None:
    """The engine loads every tensor the config implies, so weight files holding fewer
    parameters than that cannot load; a config with absurd sizes is caught here, at scan
    time, instead of reaching an allocator at Deploy."""
    try:
        mc = models.config_from_hf(cfg)
        implied = models.by_hf_name(mc.architecture).parameters(mc)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelFolderError(f"config.json is unusable: {exc}") from None
    if implied > params:
        why = "its sizes are too large" if implied > 2 * params else "a tensor is missing or too small"
        raise ModelFolderError(
            f"config.json implies {implied:,} parameters (vocab_size {mc.vocab_size:,}, hidden_size "
            f"{mc.hidden_size:,}, {mc.num_layers:,} layers) but the weight files hold {params:,}: {why}")


def _replace(entry: ModelEntry, **kw) -> ModelEntry:
    from dataclasses import replace

    return replace(entry, **kw)


def _read_json(path: pathlib.Path) -> dict:
    try:
        if path.stat().st_size > _MAX_JSON:
            raise ModelFolderError(f"{path.name} is {path.stat().st_size} bytes; over {_MAX_JSON >> 20} MiB "
                                   "it cannot be a model's JSON file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFolderError(f"{path.name} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path.name} cannot be read: {exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFolderError(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ModelFolderError(f"{path.name} must hold a JSON object")
    return obj


def _weight_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The safetensors files of a checkpoint: those an index names, else every *.safetensors."""
    index = folder / INDEX_FILE
    if index.exists():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelFolderError(f"{INDEX_FILE} has no 'weight_map'")
        files = sorted({str(v) for v in weight_map.values()})
        for name in files:
            if "/" in name or not (folder / name).is_file():
                raise ModelFolderError(f"{INDEX_FILE} names {name!r}, which is missing")
        return [folder / n for n in files]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelFolderError("no *.safetensors weight files")
    return files


def safetensors_parameters(path: pathlib.Path) -> int:
    """Parameter count of one safetensors file, checked against the file's real length."""
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ModelFolderError(f"{path.name} is truncated: shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > file_size - 8 or n > _MAX_HEADER:
                raise ModelFolderError(
                    f"{path.name} is truncated: its header claims {n} bytes but the file has {file_size - 8} after the length")
            raw = fh.read(n)
    except OSError as exc:
        raise ModelFolderError(f"{path.name} cannot be read: {exc}") from None
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelFolderError(f"{path.name} has a corrupt header (not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFolderError(f"{path.name} has a corrupt header (not a JSON object)")
    data_len = file_size - 8 - n
    total = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = t["dtype"], t["shape"], t["data_offsets"]
            if not all(type(x) is int and x >= 0 for x in (*shape, begin, end)):
                raise ValueError("shape and offsets must be non-negative integers")
            count = math.prod(shape)
            width = _ST_DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise ModelFolderError(f"{path.name}: tensor {_clean(name)[:80]!r} has a malformed header entry") from None
        if end > data_len:
            raise ModelFolderError(
                f"{path.name} is truncated: tensor {name!r} ends at byte {end} of a {data_len}-byte data section")
        if end - begin != count * width or begin < 0:
            raise ModelFolderError(f"{path.name}: tensor {name!r} offsets do not match its shape and dtype")
        total += count
    return total
