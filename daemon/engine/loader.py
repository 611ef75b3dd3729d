"""Load an HF-format model folder onto a device: config.json + *.safetensors -> CausalLM.

Tensors stream one at a time from the safetensors files (sharded via
model.safetensors.index.json too) straight into preallocated parameters of the target
dtype and device, so host memory never holds a second copy of the model. Every tensor is
checked against the shape the config implies; anything wrong raises LoadError with a
sentence naming the tensor.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from . import models
from .api import DTYPES, DeviceTarget, LoadError
from .kv_cache import free_memory_bytes
from .model import CausalLM, RMSNorm
from .models import ModelConfig

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

ProgressFn = Callable[[str, int, int, str], None]


def torch_device(target: DeviceTarget) -> torch.device:
    """The torch device for a target; imports torch_musa when the backend is musa."""
    backend = target.backend
    if backend == "cpu":
        return torch.device("cpu")
    if backend == "musa" and not hasattr(torch, "musa"):
        try:
            import torch_musa  # noqa: F401  (registers the "musa" device)
        except ImportError as exc:
            raise LoadError(f"backend musa requested but torch_musa is not importable: {exc}") from exc
    if backend == "cuda" and not torch.cuda.is_available():
        raise LoadError("backend cuda requested but torch.cuda is not available")
    if backend not in ("musa", "cuda"):
        raise LoadError(f"unknown backend {backend!r} (musa, cuda or cpu)")
    return torch.device(backend, target.indices[0] if target.indices else 0)


def read_config(model_dir: Path) -> ModelConfig:
    path = model_dir / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise LoadError(f"{model_dir} has no config.json") from exc
    except json.JSONDecodeError as exc:
        raise LoadError(f"config.json in {model_dir} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise LoadError(f"config.json in {model_dir} must hold a JSON object")
    try:
        cfg = models.config_from_hf(raw)
    except models.UnsupportedArchitecture as exc:
        raise LoadError(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(f"config.json in {model_dir} is unusable: {exc}") from exc
    gen = model_dir / "generation_config.json"
    if gen.exists():  # generation_config's eos list is often more complete (chat models)
        try:
            eos = json.loads(gen.read_text()).get("eos_token_id")
        except json.JSONDecodeError:
            eos = None
        ids = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
        if ids:
            cfg = ModelConfig(**{**cfg.__dict__, "eos_token_ids": tuple(dict.fromkeys(cfg.eos_token_ids + ids))})
    return cfg


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as exc:
            raise LoadError(f"{index.name} is unreadable: {exc}") from exc
        files = [model_dir / n for n in names]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise LoadError(f"shard {missing[0]} listed in {index.name} is missing")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise LoadError(f"{model_dir} holds no *.safetensors weights")
    return files


def _targets(model: CausalLM) -> dict[str, tuple[torch.Tensor, int, int]]:
    """Checkpoint tensor name -> (our parameter, row offset, rows), from the registry's map."""
    arch = models.by_hf_name(model.cfg.architecture)
    slots = arch.weights(model.cfg) if arch is not None else {}
    return {name: (model.get_parameter(s.param), s.row, s.shape[0]) for name, s in slots.items()}


def _weights_fit(model_dir: Path, cfg: ModelConfig, dtype: str, device: torch.device) -> None:
    """Refuses, before anything is allocated, weights the device cannot hold (a config with
    absurd sizes would otherwise reach torch's allocator and its raw message)."""
    arch = models.by_hf_name(cfg.architecture)
    need = arch.parameters(cfg) * torch.tensor([], dtype=TORCH_DTYPES[dtype]).element_size()
    free = free_memory_bytes(device)
    if need > free:
        raise LoadError(
            f"{model_dir.name} needs {need / 2**30:,.1f} GiB for its weights in {dtype} (config.json: "
            f"vocab_size {cfg.vocab_size:,}, hidden_size {cfg.hidden_size:,}, {cfg.num_layers} layers) "
            f"but {device.type} has {free / 2**30:,.1f} GiB free")


def finish_load(model: CausalLM, device: torch.device, tdtype: torch.dtype,
                compute_dtype: torch.dtype | None) -> None:
    """After the weights are in: norm weights in the compute dtype (they are tiny: no per-step
    promotion), then the RoPE tables."""
    if compute_dtype is not None and compute_dtype != tdtype:
        for mod in model.modules():
            if isinstance(mod, RMSNorm):
                mod.weight.data = mod.weight.data.to(compute_dtype)
    model.build_rope(device)


def load_failed(exc: BaseException, name: str, dtype: str) -> LoadError:
    """The LoadError for a RuntimeError or MemoryError while loading `name`: out of memory, or
    the error's own words."""
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return LoadError(f"out of memory while loading {name} in {dtype}: {exc}")
    return LoadError(f"could not load {name}: {exc}")


def load_model(model_dir: str | Path, dtype: str, device: torch.device, max_positions: int,
               progress: ProgressFn | None = None,
               cancel: threading.Event | None = None,
               compute_dtype: torch.dtype | None = None) -> CausalLM:
    """Build the model for `model_dir` on `device` in `dtype` and fill it from safetensors."""
    model_dir = Path(model_dir)
    if dtype not in DTYPES:
        raise LoadError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    cfg = read_config(model_dir)
    files = weight_files(model_dir)
    tdtype = TORCH_DTYPES[dtype]
    _weights_fit(model_dir, cfg, dtype, device)
    try:
        with torch.device("meta"):
            model = CausalLM(cfg, max_positions, "meta", tdtype, compute_dtype)
        model = model.to_empty(device=device)
        model.eval().requires_grad_(False)
        targets = _targets(model)
        # Sizes first, so progress can say "bytes of total".
        total = 0
        for f in files:
            with safe_open(str(f), framework="pt") as sf:
                for name in sf.keys():
                    if name in targets:
                        sl = sf.get_slice(name)
                        n = 1
                        for d in sl.get_shape():
                            n *= d
                        total += n * torch.tensor([], dtype=tdtype).element_size()
        done = 0
        loaded: set[str] = set()
        if progress:
            progress("loading_weights", 0, total, f"loading {len(targets)} tensors from {len(files)} file(s)")
        open_dev = str(device) if device.type == "cuda" else "cpu"
        with torch.inference_mode():
            for f in files:
                with safe_open(str(f), framework="pt", device=open_dev) as sf:
                    for name in sf.keys():
                        if cancel is not None and cancel.is_set():
                            raise LoadError("loading was cancelled")
                        target = targets.get(name)
                        if target is None:
                            continue  # e.g. rotary inv_freq buffers, or lm_head when tied
                        param, off, rows = target
                        t = sf.get_tensor(name)
                        want = (rows, *param.shape[1:])
                        if tuple(t.shape) != want:
                            raise LoadError(
                                f"tensor {name} in {f.name} has shape {tuple(t.shape)} but the config "
                                f"implies {want}")
                        param[off:off + rows].copy_(t.to(device=device, dtype=tdtype))
                        loaded.add(name)
                        done += param[off:off + rows].nbytes
                        if progress:
                            progress("loading_weights", done, total, name)
        missing = [n for n in targets if n not in loaded]
        if missing:
            raise LoadError(f"tensor {missing[0]} is missing from the weights "
                            f"({len(missing)} missing in all)")
        finish_load(model, device, tdtype, compute_dtype)
    except LoadError:
        raise
    except (RuntimeError, MemoryError) as exc:
        raise load_failed(exc, model_dir.name, dtype) from exc
    except OSError as exc:  # unreadable or corrupt safetensors
        raise LoadError(f"could not read weights of {model_dir.name}: {exc}") from exc
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise LoadError(f"could not read weights of {model_dir.name}: {exc}") from exc
    return model
