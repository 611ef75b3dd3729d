"""What a GGUF file holds, read with llama.cpp's `gguf` package: torch-free.

`inspect_gguf(path)` turns a .gguf file's metadata into the config.json-shaped dict the
architecture registry (engine/models) reads, checks every tensor the model needs against
the shape that config implies and against the quantization types the loader dequantizes,
and keeps the tokenizer's vocabulary, merges (or SentencePiece scores) and chat template. Any problem is a GGUFError
with a sentence (the repository lists it, Deploy refuses with it). Results are cached per
(path, size, mtime): parsing a 49k-token vocabulary costs the `gguf` reader seconds, and
ListModels, Deploy's validation and the loader all ask.

Reading is the `gguf` package's GGUFReader with one change (`_Reader`): an array field is
read as one slice (numbers) or one pass over the length prefixes (strings) instead of two
numpy views per element, so a 49k-token vocabulary and its merges take milliseconds, not
seconds. `ReaderField.contents()` gives the same values.

A model is either one `.gguf` file in the repository or a folder holding exactly one.
"""

from __future__ import annotations

import collections
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import Architecture, ModelConfig, UnsupportedArchitecture, by_gguf_name

SUFFIX = ".gguf"
# Tensor types the loader turns into bf16/fp16/fp32 (gguf.quants.dequantize does the maths).
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
# GGUF architectures whose Q and K rows llama.cpp's converter permuted (interleaved rotary
# halves); the loader undoes it. Qwen2's converter leaves them as they are.
PERMUTED_QK = ("llama",)
# Tokens llama.cpp also ends a turn at when the vocabulary marks them as control tokens
# (llama-vocab.cpp's end-of-generation list).
EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
             "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>")
TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED = 2, 3, 4
# tokenizer.ggml.model values the loader builds: byte-level BPE and SentencePiece-style BPE
# (scores instead of merges, <0xXX> byte tokens).
TOKENIZER_MODELS = ("gpt2", "llama")
_MAX_DIM = 1 << 20        # no real model has a hidden size, layer count or head count this large
_MAX_CONTEXT = 1 << 24


class GGUFError(Exception):
    """Why a .gguf file cannot be listed or deployed (a sentence for operators)."""


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes are: the GGUF name, type name, numpy shape (rows first),
    byte offset in the file and byte count."""

    name: str
    type: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class TokenizerSpec:
    model: str                       # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str                         # tokenizer.ggml.pre, e.g. "smollm", "llama-bpe", "qwen2"
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]
    bos_id: int | None
    eos_ids: tuple[int, ...]         # eos, eot, eom and llama.cpp's end-of-generation controls
    add_bos: bool
    chat_template: str | None
    scores: tuple[float, ...] = ()   # "llama": one per token, the merge order when no merges are stored
    unk_id: int | None = None
    add_eos: bool = False
    add_space_prefix: bool = True    # "llama": "▁" before the text (tokenizer.ggml.add_space_prefix)


@dataclass(frozen=True)
class GGUFModel:
    path: Path
    arch_name: str                   # general.architecture, e.g. "llama"
    architecture: Architecture
    hf_name: str                     # the registry's config.json name, e.g. "LlamaForCausalLM"
    hf_config: dict[str, Any]
    config: ModelConfig
    quantization: str                # e.g. "Q4_1" (general.file_type, else the most common type)
    tensor_types: dict[str, int]     # type name -> tensor count
    parameters: int
    tensors: dict[str, TensorRef] = field(repr=False)   # HF tensor name -> where it is
    permuted_qk: bool = False
    tokenizer: TokenizerSpec | None = field(default=None, repr=False)

    @property
    def checkpoint_dtype(self) -> str:
        """The torch dtype a file's weights are natively in; quantized files say bfloat16
        (what their dequantized values are deployed in by default)."""
        counts = {t: n for t, n in self.tensor_types.items() if t != "F32"}
        if not counts:
            return "float32"
        if set(counts) == {"F16"}:
            return "float16"
        return "bfloat16"


def gguf_file(path: str | os.PathLike[str]) -> Path | None:
    """The .gguf file a repository entry stands for: the path itself, or the one .gguf in a
    folder without a config.json; None for anything else. A folder with several raises."""
    p = Path(path)
    if p.name.endswith(SUFFIX) and not p.is_dir():
        return p
    if not p.is_dir() or (p / "config.json").exists():
        return None
    found = sorted(f for f in p.iterdir() if f.name.endswith(SUFFIX) and not f.name.startswith("."))
    if len(found) > 1:
        raise GGUFError(f"the folder holds {len(found)} .gguf files ({', '.join(f.name for f in found[:3])}); "
                        "keep one model per folder")
    return found[0] if found else None


_cache: dict[str, tuple[tuple, GGUFModel]] = {}
_cache_lock = threading.Lock()


def inspect_gguf(path: str | os.PathLike[str]) -> GGUFModel:
    """The described model in `path` (a .gguf file); GGUFError with a sentence when it cannot
    be deployed. Cached per (size, mtime)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise GGUFError(f"{path.name} cannot be read: {exc.strerror or exc}") from None
    sig = (st.st_size, st.st_mtime_ns, st.st_ino)
    key = str(path.resolve())
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
    model = _inspect(path, st.st_size)
    with _cache_lock:
        _cache[key] = (sig, model)
    return model


def _inspect(path: Path, file_size: int) -> GGUFModel:
    import gguf

    if file_size < 24:
        raise GGUFError(f"{path.name} is truncated: {file_size} bytes is less than a GGUF header")
    try:
        reader = _reader_class()(path, "r")
    except (ValueError, IndexError, KeyError, OSError, OverflowError, TypeError, UnicodeDecodeError) as exc:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic != b"GGUF":
            raise GGUFError(f"{path.name} is not a GGUF file (it does not start with 'GGUF')") from None
        raise GGUFError(f"{path.name} is truncated or corrupt: the gguf reader says {str(exc)[:160]}") from None
    except Exception as exc:  # noqa: BLE001 - numpy raises assorted errors on a cut-off file
        raise GGUFError(f"{path.name} is truncated or corrupt: {type(exc).__name__}: {str(exc)[:160]}") from None

    def value(key: str, default: Any = None) -> Any:
        f = reader.fields.get(key)
        if f is None:
            return default
        try:
            return f.contents()
        except Exception:  # noqa: BLE001
            raise GGUFError(f"{path.name}: metadata {key!r} is unreadable") from None

    arch_name = value("general.architecture")
    if not isinstance(arch_name, str):
        raise GGUFError(f"{path.name} has no general.architecture in its metadata")
    arch = by_gguf_name(arch_name)
    if arch is None:
        from .models import FAMILIES
        names = sorted(n for a in FAMILIES for n in a.gguf_names)
        raise GGUFError(f"GGUF architecture {arch_name!r} is not supported by this engine "
                        f"(supported: {', '.join(names)})")

    def count(key: str, *, required: bool = True, limit: int = _MAX_DIM) -> int:
        v = value(f"{arch_name}.{key}")
        if v is None:
            if required:
                raise GGUFError(f"{path.name} lacks {arch_name}.{key} in its metadata")
            return 0
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= limit:
            raise GGUFError(f"{path.name}: {arch_name}.{key} is {str(v)[:40]}, which no model can have "
                            f"(a positive integer up to {limit})")
        return v

    hidden = count("embedding_length")
    layers = count("block_count")
    heads = count("attention.head_count")
    kv_heads = count("attention.head_count_kv", required=False) or heads
    inter = count("feed_forward_length")
    context = count("context_length", required=False, limit=_MAX_CONTEXT) or 4096
    head_dim = count("attention.key_length", required=False) or hidden // heads
    rope_dims = count("rope.dimension_count", required=False) or head_dim
    if rope_dims != head_dim:
        raise GGUFError(f"{path.name}: rotary embedding over {rope_dims} of {head_dim} head dimensions "
                        "(partial rotary) is not supported")
    if "rope_freqs.weight" in {t.name for t in reader.tensors}:
        raise GGUFError(f"{path.name} carries rope_freqs (Llama 3.1-style rope scaling), which the GGUF "
                        "loader does not convert yet")
    scaling_type = value(f"{arch_name}.rope.scaling.type", "none")
    rope_scaling = None
    if scaling_type == "linear":
        rope_scaling = {"rope_type": "linear", "factor": float(value(f"{arch_name}.rope.scaling.factor", 1.0))}
    elif scaling_type not in ("none", None):
        raise GGUFError(f"{path.name}: rope scaling {scaling_type!r} is not supported (none, linear)")

    tok = _tokenizer(path.name, value)
    vocab = value(f"{arch_name}.vocab_size") or (len(tok.tokens) if tok else 0)
    if not isinstance(vocab, int) or not 0 < vocab <= 1 << 24:
        raise GGUFError(f"{path.name}: the vocabulary size {str(vocab)[:40]} is impossible")
    names = {t.name for t in reader.tensors}
    hf_cfg: dict[str, Any] = {
        "architectures": [arch.hf_names[0]],
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "intermediate_size": inter, "head_dim": head_dim,
        "max_position_embeddings": context, "vocab_size": vocab,
        "rms_norm_eps": float(value(f"{arch_name}.attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(value(f"{arch_name}.rope.freq_base", 10000.0)),
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": "output.weight" not in names,
        "eos_token_id": list(tok.eos_ids) if tok else None,
        "bos_token_id": tok.bos_id if tok else None,
    }
    try:
        config = arch.config(hf_cfg, arch.hf_names[0])
    except (UnsupportedArchitecture, KeyError, TypeError, ValueError) as exc:
        raise GGUFError(f"{path.name}: its metadata gives an unusable config: {exc}") from None

    # Every tensor the registry says the model needs, found under its llama.cpp name.
    mtype = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name) \
        if arch_name in gguf.MODEL_ARCH_NAMES.values() else None
    if mtype is None:
        raise GGUFError(f"{path.name}: the gguf package does not know architecture {arch_name!r}")
    name_map = gguf.get_tensor_name_map(mtype, layers)
    by_name = {t.name: t for t in reader.tensors}
    tensors: dict[str, TensorRef] = {}
    for hf_name, slot in arch.weights(config).items():
        gname = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if hf_name == "lm_head.weight":
            gname = "output.weight"
        t = by_name.get(gname or "")
        if t is None:
            raise GGUFError(f"{path.name} lacks tensor {gname or hf_name} ({hf_name})")
        tname = t.tensor_type.name
        if tname not in SUPPORTED_TYPES:
            raise GGUFError(f"tensor {t.name} of {path.name} is {tname}, which this engine cannot dequantize "
                            f"(supported: {', '.join(SUPPORTED_TYPES)})")
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))   # GGUF lists the fastest axis first
        while len(shape) > len(slot.shape) and shape[0] == 1:
            shape = shape[1:]
        if shape != slot.shape:
            raise GGUFError(f"tensor {t.name} of {path.name} has shape {shape} but the metadata implies {slot.shape}")
        end = int(t.data_offset) + int(t.n_bytes)
        if end > file_size:
            raise GGUFError(f"{path.name} is truncated: tensor {t.name} ends at byte {end} of {file_size}")
        tensors[hf_name] = TensorRef(t.name, tname, shape, int(t.data_offset), int(t.n_bytes))

    types = collections.Counter(t.tensor_type.name for t in reader.tensors)
    ftype = value("general.file_type")
    try:
        quant = gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_") if isinstance(ftype, int) else ""
    except ValueError:
        quant = ""
    if not quant or quant == "GUESSED":
        quant = max((n, t) for t, n in collections.Counter(
            t.tensor_type.name for t in reader.tensors if len(t.shape) > 1).items())[1] if types else ""
    params = sum(math.prod(r.shape) for r in tensors.values())
    if tok is None:
        raise GGUFError(f"{path.name} has no tokenizer in its metadata (tokenizer.ggml.*)")
    return GGUFModel(path=path, arch_name=arch_name, architecture=arch, hf_name=arch.hf_names[0],
                     hf_config=hf_cfg, config=config, quantization=quant, tensor_types=dict(types),
                     parameters=params, tensors=tensors, permuted_qk=arch_name in PERMUTED_QK,
                     tokenizer=tok)


_READER = None


def _reader_class():
    """gguf.GGUFReader whose array fields are parsed in bulk (same fields, same contents())."""
    global _READER
    if _READER is not None:
        return _READER
    import sys

    import gguf
    import numpy as np

    VT = gguf.GGUFValueType

    class _Reader(gguf.GGUFReader):
        def _get_field_parts(self, orig_offs, raw_type):
            if raw_type != VT.ARRAY or self.byte_order != "I":
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            if len(raw_itype) != 1 or len(alen) != 1:
                raise ValueError("an array field runs past the end of the file")
            n, itype, offs = int(alen[0]), int(raw_itype[0]), orig_offs + 12
            if itype == VT.STRING:
                buf = memoryview(self.data)
                end, order = len(buf), sys.byteorder
                parts: list = [raw_itype, alen]
                for _ in range(n):
                    if offs + 8 > end:
                        raise ValueError("a string array runs past the end of the file")
                    slen = int.from_bytes(buf[offs:offs + 8], order)
                    if offs + 8 + slen > end:
                        raise ValueError("a string runs past the end of the file")
                    parts.append(buf[offs + 8:offs + 8 + slen])   # .tobytes() as contents() needs
                    offs += 8 + slen
                return offs - orig_offs, parts, list(range(2, 2 + n)), [VT.ARRAY, VT.STRING]
            nptype = self.gguf_scalar_to_np.get(VT(itype))
            if nptype is None:
                return super()._get_field_parts(orig_offs, raw_type)
            arr = self._get(offs, nptype, n)
            if len(arr) != n:
                raise ValueError("an array runs past the end of the file")
            return 12 + int(arr.nbytes), [raw_itype, alen, arr], [2], [VT.ARRAY, VT(itype)]

    _READER = _Reader
    return _READER


def _tokenizer(fname: str, value) -> TokenizerSpec | None:
    model = value("tokenizer.ggml.model")
    if model is None:
        return None
    if model not in TOKENIZER_MODELS:
        raise GGUFError(f"{fname}: tokenizer model {model!r} is not supported (gpt2-style byte-level BPE "
                        "and llama-style SentencePiece are)")
    tokens = value("tokenizer.ggml.tokens") or []
    merges = value("tokenizer.ggml.merges") or []
    types = value("tokenizer.ggml.token_type") or [1] * len(tokens)
    if not tokens or len(types) != len(tokens):
        raise GGUFError(f"{fname}: the tokenizer vocabulary is empty or its token types do not match it")
    scores: list[float] = []
    if model == "llama" and not merges:
        scores = value("tokenizer.ggml.scores") or []
        if len(scores) != len(tokens):
            raise GGUFError(f"{fname}: the SentencePiece vocabulary has neither merges nor one score per token")

    def tid(key: str) -> int | None:
        v = value(key)
        return v if isinstance(v, int) and 0 <= v < len(tokens) else None

    bos = tid("tokenizer.ggml.bos_token_id")
    eos = [i for i in (tid("tokenizer.ggml.eos_token_id"), tid("tokenizer.ggml.eot_token_id"),
                       tid("tokenizer.ggml.eom_token_id")) if i is not None]
    index = {t: i for i, t in enumerate(tokens)}
    eos += [index[t] for t in EOG_TEXTS if t in index and types[index[t]] == TOKEN_CONTROL]
    # A BOS the file also names as EOS is a placeholder, not a sequence start (SmolLM2's
    # metadata names <|im_start|> for both; its own tokenizer never adds it). A SentencePiece
    # file without the flag gets BOS, as llama.cpp and transformers give it.
    add_bos = bool(value("tokenizer.ggml.add_bos_token", model == "llama")) and bos is not None \
        and bos != tid("tokenizer.ggml.eos_token_id")
    template = value("tokenizer.chat_template")
    return TokenizerSpec(model=model, pre=str(value("tokenizer.ggml.pre", "default")), tokens=tuple(tokens),
                         token_types=tuple(int(t) for t in types), merges=tuple(merges), bos_id=bos,
                         eos_ids=tuple(dict.fromkeys(eos)), add_bos=add_bos,
                         chat_template=template if isinstance(template, str) else None,
                         scores=tuple(float(x) for x in scores), unk_id=tid("tokenizer.ggml.unknown_token_id"),
                         add_eos=bool(value("tokenizer.ggml.add_eos_token", False))
                         and tid("tokenizer.ggml.eos_token_id") is not None,
                         add_space_prefix=bool(value("tokenizer.ggml.add_space_prefix", True)))


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """Whether a repository entry is a GGUF model (a .gguf file, or a folder of one)."""
    try:
        return gguf_file(path) is not None
    except GGUFError:
        return True   # a folder of several .gguf files: the loader says why
