"""load_engine: a model folder -> a running LLMEngine, reporting each stage's progress.

Called by the deployment manager in a worker thread (blocking). Stages: loading_weights
(bytes), allocating_kv_cache (blocks), warming_up (steps).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from .api import (DeviceTarget, EngineInfo, EngineSpec, LoadError, LoadProgress, RequestObserver,
                  SamplingParams)
from . import gguf_loader
from .engine import LLMEngine
from .gguf_meta import is_gguf
from .kv_cache import KVCache, bytes_per_block, free_memory_bytes
from .loader import TORCH_DTYPES, load_model, read_config, torch_device
from .models import ModelConfig
from .runner import ModelRunner
from .scheduler import ScheduledChunk, Sequence
from .tokenizer import Tokenizer

WARMUP_STEPS = 3


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _size(n: int) -> str:
    """Bytes for a sentence: '0 bytes', '512 bytes', '3.5 MiB'."""
    if n < 1024:
        return f"{n:,} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit} ({n:,} bytes)"


def _compute_dtype(dtype: str, device: torch.device, cfg: ModelConfig) -> torch.dtype:
    """bf16 weights on a CPU compute in bf16 where the native forward runs (cpu_forward:
    AVX-512, an architecture it computes), else in fp32 through cpu_kernels' AVX2 kernel
    where that runs."""
    tdtype = TORCH_DTYPES[dtype]
    if device.type == "cpu" and tdtype == torch.bfloat16:
        from . import cpu_forward, cpu_kernels
        if not cpu_forward.refusal(cfg) and cpu_forward.load() is not None:
            return tdtype
        if cpu_kernels.wanted() and cpu_kernels.load() is not None:
            return torch.float32
    return tdtype


def load_engine(model_dir: str | Path, spec: EngineSpec, target: DeviceTarget,
                progress: LoadProgress | None = None, observer: RequestObserver | None = None,
                cancel: threading.Event | None = None) -> LLMEngine:
    model_dir = Path(model_dir)
    report = progress or (lambda stage, done, total, message: None)
    if spec.dtype not in TORCH_DTYPES:
        raise LoadError(f"dtype {spec.dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
    if spec.max_batch < 1:
        raise LoadError(f"max_batch is {spec.max_batch}; it must be at least 1")
    if spec.max_context < 2:
        raise LoadError(f"max_context is {spec.max_context}; it must be at least 2 tokens "
                        "(one prompt token and one generated token)")
    if spec.kv_block_size < 1:
        raise LoadError(f"kv_block_size is {spec.kv_block_size}; it must be at least 1 token")
    device = torch_device(target)
    if device.type == "cpu":
        torch.set_num_threads(_cpu_threads())
    gguf = gguf_loader.model_path(model_dir) if is_gguf(model_dir) else None
    cfg = gguf.config if gguf else read_config(model_dir)
    tokenizer = gguf_loader.build_tokenizer(gguf) if gguf else Tokenizer(model_dir)
    max_context = min(spec.max_context, cfg.max_position_embeddings, cfg.sliding_window or spec.max_context)
    compute_dtype = _compute_dtype(spec.dtype, device, cfg)
    if gguf:
        model = gguf_loader.load_gguf_model(gguf, spec.dtype, device, max_context, report, cancel, compute_dtype)
    else:
        model = load_model(model_dir, spec.dtype, device, max_context, report, cancel, compute_dtype)

    # KV cache: a fraction of what is free now, no more than max_batch full contexts need.
    dtype = compute_dtype
    bs = spec.kv_block_size
    per_block = bytes_per_block(cfg, bs, dtype)
    blocks_per_seq = -(-max_context // bs)
    if spec.kv_blocks is not None:
        num_blocks = spec.kv_blocks
    else:
        budget = int(spec.kv_cache_fraction * free_memory_bytes(device))
        num_blocks = min(budget // per_block, spec.max_batch * blocks_per_seq)
    if num_blocks < 1:
        given = "kv_blocks is 0" if spec.kv_blocks is not None else (
            f"kv_cache_fraction {spec.kv_cache_fraction:.3g} of the free memory gives "
            f"{_size(budget)}")
        raise LoadError(f"not enough memory for the KV cache: one {bs}-token block needs "
                        f"{_size(per_block)}, and {given}; raise kv_cache_fraction "
                        "(or lower kv_block_size)")
    report("allocating_kv_cache", 0, num_blocks, f"{num_blocks} blocks of {bs} tokens")
    try:
        cache = KVCache(cfg, num_blocks, bs, dtype, device)
    except (RuntimeError, MemoryError) as exc:
        raise LoadError(f"out of memory allocating {num_blocks * per_block} bytes of KV cache: {exc}") from exc
    report("allocating_kv_cache", num_blocks, num_blocks, f"{cache.nbytes} bytes")
    max_context = min(max_context, num_blocks * bs)  # one sequence alone must always fit

    # Warm-up: one prefill and a few decodes through the real runner.
    runner = ModelRunner(model, cache, device)
    n = min(8, max_context - WARMUP_STEPS)
    if n > 0:
        seq = Sequence("warmup", [0] * n, SamplingParams(), max_tokens=WARMUP_STEPS)
        seq.block_table = list(range(min(num_blocks, -(-(n + WARMUP_STEPS) // bs))))
        for step in range(WARMUP_STEPS):
            if cancel is not None and cancel.is_set():
                raise LoadError("loading was cancelled")
            chunk = ScheduledChunk(seq, 0, n) if step == 0 else ScheduledChunk(seq, seq.num_tokens - 1, 1)
            logits = runner.run([chunk])
            seq.num_computed = chunk.start + chunk.length
            seq.output_ids.append(int(logits[0].argmax()))
            report("warming_up", step + 1, WARMUP_STEPS, "")
    eos = tuple(dict.fromkeys(cfg.eos_token_ids + tuple(
        i for i in [tokenizer.token_id(tokenizer.eos_token)] if i is not None)))
    weights_bytes = sum(p.nbytes for p in model.parameters())
    info = EngineInfo(dtype=spec.dtype, max_batch=spec.max_batch, max_context=max_context,
                      weights_bytes=weights_bytes, kv_cache_bytes=cache.nbytes, kv_block_size=bs,
                      kv_blocks_total=num_blocks, eos_token_ids=eos)
    return LLMEngine(model, tokenizer, cache, spec, device, info, observer)
