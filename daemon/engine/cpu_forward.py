"""Whole forward steps of a bf16 model in one native call, on x86 CPUs with AVX-512.

For a decode step torch runs ~40 small ops per layer and a small-M bf16 GEMM that reads the
weights at about half the memory bandwidth: on two cores, 36 ms a token for a 0.4 B model
whose weights take 14 ms to read. csrc/forward_avx512.c does the same step (embedding,
every layer, final norm, LM head for the sampling rows) in one call on the library's own
team of threads (not OpenMP: see the C file), reading each weight row once per call
whatever the batch size. It prefills faster than torch too (measured on a 2-core Zen 4:
520 against 435 prompt tokens/s for 32 prompts of 64 tokens, 380 against 150 for one of
2,048), so such a model runs every step through it.

The source builds in two variants (VARIANTS, best first): `avx512_bf16` uses the CPU's bf16
dot-product instruction; `avx512` (Skylake-SP to Ice Lake Xeons, AVX512F/BW/DQ/VL without
BF16) widens bf16 pairs to fp32 in registers, so the weights are still read as bf16, half
the bytes of float32. Compiled with the system compiler on first use, like cpu_kernels;
when anything is missing the engine uses torch alone. MUSAOPS_CPU_FORWARD=avx512_bf16 or
=avx512 picks that variant, =1 forces the attempt on a CPU whose flags do not list any, and
=0 (or any other value) turns it off.
"""

from __future__ import annotations

import ctypes
import os
import platform
from array import array
from dataclasses import dataclass
from pathlib import Path

import torch

from ..devices.cpu import cpu_flags
from . import cpu_kernels, models
from .kv_cache import KVCache
from .model import CausalLM
from .models import ModelConfig

SOURCE = Path(__file__).with_name("csrc") / "forward_avx512.c"
_FLAGS = ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mfma", "-pthread"]
_CPU_FLAGS = frozenset({"avx512f", "avx512dq", "avx512bw", "avx512vl", "fma"})


@dataclass(frozen=True)
class Variant:
    """One build of the C source: its compiler flags and the CPU flags it needs."""

    name: str
    flags: tuple[str, ...]
    cpu_flags: frozenset[str]


VARIANTS = (   # best first
    Variant("avx512_bf16", (*_FLAGS, "-mavx512bf16"), _CPU_FLAGS | {"avx512_bf16"}),
    Variant("avx512", tuple(_FLAGS), _CPU_FLAGS),
)
MAX_TOKENS = 256   # tokens per native call; a longer step runs as several calls in order

_P = ctypes.c_void_p
_I64 = ctypes.c_int64


class _Model(ctypes.Structure):
    """Mirrors `Model` in the C file (same order)."""

    _fields_ = [(n, _I64) for n in ("hidden", "inter", "num_heads", "num_kv_heads", "head_dim", "vocab",
                                     "num_layers", "block_size")] + [
        ("eps", ctypes.c_float), ("scale", ctypes.c_float),
        *[(n, _P) for n in ("embed", "final_norm", "lm_head", "cos", "sin", "ln1", "qkv_w", "qkv_b", "o_w",
                            "ln2", "gate_up_w", "down_w", "k_cache", "v_cache")]]


class _Step(ctypes.Structure):
    """Mirrors `Step` in the C file (same order)."""

    _fields_ = [("tokens", _I64), ("ids", _P), ("pos", _P), ("slot", _P), ("seq", _P), ("tables", _P),
                ("table_width", _I64), ("num_logits", _I64), ("logit_rows", _P), ("logits", _P),
                ("scratch", _P), ("threads", ctypes.c_int)]


def variant(flags: set[str] | None = None) -> str | None:
    """The variant this process runs (see the module docstring), or None."""
    env = os.environ.get("MUSAOPS_CPU_FORWARD")
    if env in _LIBRARIES:
        return env
    if env not in (None, "1"):   # "0", or a value this version does not know: off
        return None
    flags = cpu_flags() if flags is None else flags
    if platform.machine() in ("x86_64", "AMD64"):
        for v in VARIANTS:
            if v.cpu_flags <= flags:
                return v.name
    return VARIANTS[0].name if env == "1" else None


def _declare(lib: ctypes.CDLL) -> None:
    lib.forward.restype = ctypes.c_int
    lib.forward.argtypes = [ctypes.POINTER(_Model), ctypes.POINTER(_Step)]
    lib.forward_scratch_bytes.restype = _I64
    lib.forward_scratch_bytes.argtypes = [ctypes.POINTER(_Model), _I64, ctypes.c_int]


_LIBRARIES = {v.name: cpu_kernels.NativeLibrary(f"forward_{v.name}", SOURCE.read_text, list(v.flags), _declare,
                                                 "using torch") for v in VARIANTS}


def load(name: str | None = None) -> ctypes.CDLL | None:
    """The compiled library of variant `name` (default: variant()), built on first use;
    None when it cannot be built here."""
    name = name or variant()
    return _LIBRARIES[name].get() if name else None


def _ptrs(tensors: list[torch.Tensor | None]) -> ctypes.Array:
    return (_P * len(tensors))(*[None if t is None else t.data_ptr() for t in tensors])


def refusal(cfg: ModelConfig) -> str:
    """Why the C forward cannot compute this model (a sentence), or "" when it can: it does
    Llama's maths only, for the families the registry (engine/models) marks native_cpu."""
    arch = models.by_hf_name(cfg.architecture)
    if arch is None or not arch.native_cpu:
        return f"the native CPU forward does not compute architecture {cfg.architecture!r}"
    if cfg.num_heads % cfg.num_kv_heads or cfg.head_dim % 2:
        return (f"the native CPU forward needs whole query groups and an even head size "
                f"({cfg.num_heads} heads, {cfg.num_kv_heads} KV heads, head size {cfg.head_dim})")
    return ""


class CpuForward:
    """A loaded model's weights and KV cache as the C kernel sees them."""

    def __init__(self, lib: ctypes.CDLL, model: CausalLM, cache: KVCache, variant: str = "") -> None:
        cfg = model.cfg
        why = refusal(cfg)
        if why:
            raise ValueError(why)
        self.lib = lib
        self.variant = variant
        self.vocab = cfg.vocab_size
        layers = list(model.layers)
        attn = [layer.self_attn for layer in layers]
        mlp = [layer.mlp for layer in layers]
        # The arrays hold raw pointers: keep them (and so the tensors' owners) alive here.
        self._arrays = {
            "ln1": _ptrs([la.input_layernorm.weight for la in layers]),
            "qkv_w": _ptrs([a.qkv_proj.weight for a in attn]),
            "qkv_b": _ptrs([a.qkv_proj.bias for a in attn]),
            "o_w": _ptrs([a.o_proj.weight for a in attn]),
            "ln2": _ptrs([la.post_attention_layernorm.weight for la in layers]),
            "gate_up_w": _ptrs([m.gate_up_proj.weight for m in mlp]),
            "down_w": _ptrs([m.down_proj.weight for m in mlp]),
            "k_cache": _ptrs([k for k, _v in cache.layers]),
            "v_cache": _ptrs([v for _k, v in cache.layers]),
        }
        self._model = model
        self._cache = cache
        self.desc = _Model(
            hidden=cfg.hidden_size, inter=cfg.intermediate_size, num_heads=cfg.num_heads,
            num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, vocab=cfg.vocab_size,
            num_layers=cfg.num_layers, block_size=cache.block_size, eps=cfg.rms_norm_eps,
            scale=cfg.head_dim ** -0.5, embed=model.embed_tokens.weight.data_ptr(),
            final_norm=model.norm.weight.data_ptr(), lm_head=model.lm_weight().data_ptr(),
            cos=model.cos_table.data_ptr(), sin=model.sin_table.data_ptr(),
            **{name: ctypes.cast(arr, _P) for name, arr in self._arrays.items()})
        self._scratch = torch.empty(0, dtype=torch.uint8)
        self._scratch_threads = 0

    def _scratch_for(self, threads: int) -> int:
        if threads != self._scratch_threads:
            size = self.lib.forward_scratch_bytes(ctypes.byref(self.desc), MAX_TOKENS, threads)
            self._scratch = torch.empty(size, dtype=torch.uint8)
            self._scratch_threads = threads
        return self._scratch.data_ptr()

    def run(self, ids: list[int], pos: list[int], slots: list[int], seq: list[int], tables: list[int],
            width: int, logit_rows: list[int]) -> torch.Tensor:
        """fp32 logits [len(logit_rows), vocab] for a step; `tables` is [sequences, width] flattened.

        Tokens must be in position order within each sequence. A step of more than
        MAX_TOKENS tokens runs as consecutive slices: a later slice's tokens find the
        earlier slices' keys and values in the cache, exactly as in chunked prefill.
        """
        if not ids:
            raise ValueError("a step needs at least one token")
        if min(ids) < 0 or max(ids) >= self.vocab:
            raise ValueError(f"token id outside the model's vocabulary of {self.vocab}")
        logits = torch.empty(len(logit_rows), self.vocab, dtype=torch.float32)
        threads = torch.get_num_threads()
        scratch = self._scratch_for(threads)
        tab = array("q", tables)
        done_rows = 0
        for a in range(0, len(ids), MAX_TOKENS):
            b = min(a + MAX_TOKENS, len(ids))
            rows = [r - a for r in logit_rows[done_rows:] if r < b]
            # One int64 buffer for the slice's index lists; the C side gets pointers into it.
            buf = array("q", ids[a:b])
            offsets = []
            for part in (pos[a:b], slots[a:b], seq[a:b], rows):
                offsets.append(len(buf))
                buf.extend(part)
            base, _n = buf.buffer_info()
            at = [base + 8 * o for o in offsets]
            step = _Step(tokens=b - a, ids=base, pos=at[0], slot=at[1], seq=at[2], tables=tab.buffer_info()[0],
                         table_width=width, num_logits=len(rows), logit_rows=at[3],
                         logits=logits.data_ptr() + done_rows * self.vocab * 4, scratch=scratch, threads=threads)
            rc = self.lib.forward(ctypes.byref(self.desc), ctypes.byref(step))
            if rc != 0:
                raise RuntimeError(f"native CPU forward refused the step (code {rc})")
            done_rows += len(rows)
        return logits


def for_model(model: CausalLM, cache: KVCache, device: torch.device) -> CpuForward | None:
    """The native forward for this model when it applies (CPU, bf16 throughout, AVX-512, an
    architecture registered native_cpu); None means torch runs it."""
    name = variant()
    if device.type != "cpu" or name is None:
        return None
    tensors = [*model.parameters(), model.cos_table, model.sin_table, cache.storage]
    if any(t.dtype != torch.bfloat16 or not t.is_contiguous() for t in tensors):
        return None
    if refusal(model.cfg):
        return None
    lib = load(name)
    return CpuForward(lib, model, cache, name) if lib is not None else None
