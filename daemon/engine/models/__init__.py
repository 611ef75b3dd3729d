"""The model architectures the engine runs, one module per family, looked up by name.

A config.json names its architecture in `architectures` (e.g. "LlamaForCausalLM"); a GGUF
file in `general.architecture` (e.g. "llama"). Each family module declares both, how its
config maps onto ModelConfig, how its tensor names map onto engine/model.CausalLM, and
whether the native CPU forward computes it. Anything not registered here is refused with
a sentence: by the repository at scan time, by the loader, and by cpu_forward. Torch-free.

A new family is a module here plus its entry in FAMILIES (and a decoder in engine/model.py
when its maths differ from Llama's).
"""

from __future__ import annotations

from typing import Any

from . import llama, qwen2
from .base import Architecture, ModelConfig, UnsupportedArchitecture, WeightSlot

__all__ = ["Architecture", "FAMILIES", "ModelConfig", "UnsupportedArchitecture", "WeightSlot",
           "by_gguf_name", "by_hf_name", "config_from_hf", "hf_names", "resolve_hf"]

FAMILIES: tuple[Architecture, ...] = (llama.ARCHITECTURE, qwen2.ARCHITECTURE)

_BY_HF = {name: a for a in FAMILIES for name in a.hf_names}
_BY_GGUF = {name: a for a in FAMILIES for name in a.gguf_names}


def hf_names() -> tuple[str, ...]:
    """Every config.json architecture name the engine runs, sorted."""
    return tuple(sorted(_BY_HF))


def by_hf_name(name: str) -> Architecture | None:
    return _BY_HF.get(name)


def by_gguf_name(name: str) -> Architecture | None:
    return _BY_GGUF.get(name)


def resolve_hf(cfg: dict[str, Any]) -> tuple[str, Architecture]:
    """The first registered name in config.json's `architectures`, and its family; raises
    UnsupportedArchitecture with a sentence when none is registered."""
    archs = cfg.get("architectures")
    names = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    for name in names:
        if name in _BY_HF:
            return name, _BY_HF[name]
    shown = ", ".join(names) if names else f"model_type {cfg.get('model_type')!r}"
    raise UnsupportedArchitecture(
        f"architecture {shown} is not supported by this engine (supported: {', '.join(hf_names())})")


def config_from_hf(cfg: dict[str, Any]) -> ModelConfig:
    """config.json -> ModelConfig through its family; UnsupportedArchitecture for an unknown
    one, KeyError/TypeError/ValueError for a missing or malformed field."""
    name, arch = resolve_hf(cfg)
    return arch.config(cfg, name)
