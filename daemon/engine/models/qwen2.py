"""Qwen2: the Llama decoder with a bias on the Q, K and V projections."""

from __future__ import annotations

from typing import Any

from .base import Architecture, ModelConfig
from .llama import decoder_config, decoder_weights


def qwen2_config(cfg: dict[str, Any], arch: str) -> ModelConfig:
    return decoder_config(cfg, arch, qkv_bias=True)


ARCHITECTURE = Architecture(
    family="qwen2",
    hf_names=("Qwen2ForCausalLM",),
    gguf_names=("qwen2",),
    config=qwen2_config,
    weights=decoder_weights,
    native_cpu=True,   # the C forward adds qkv_b when the model has it
)
