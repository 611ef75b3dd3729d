"""What one model architecture declares, and the decoder config every family fills in.

Torch-free: the repository reads these at scan time to refuse what the engine cannot run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable


@dataclass(frozen=True)
class ModelConfig:
    """The fields of an HF config.json the decoder (engine/model.py) needs."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    sliding_window: int | None = None   # Mistral; contexts are capped to it (no windowed attention)


@dataclass(frozen=True)
class WeightSlot:
    """Where one checkpoint tensor goes: a parameter of engine/model.CausalLM (dotted name),
    the first row it fills (fused projections), and the tensor's shape in the checkpoint."""

    param: str
    row: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Architecture:
    """One model family as the engine runs it.

    hf_names: the config.json `architectures` entries it accepts; gguf_names: the GGUF
    `general.architecture` values it accepts; config: config.json dict -> ModelConfig
    (raises KeyError/TypeError/ValueError on a bad file); weights: ModelConfig -> checkpoint
    tensor name -> WeightSlot (every tensor the model needs, nothing optional);
    native_cpu: whether csrc/forward_avx512.c computes this family's maths (cpu_forward
    refuses the others and they run through torch).
    """

    family: str
    hf_names: tuple[str, ...]
    gguf_names: tuple[str, ...]
    config: Callable[[dict[str, Any], str], ModelConfig]
    weights: Callable[[ModelConfig], dict[str, WeightSlot]]
    native_cpu: bool

    def parameters(self, cfg: ModelConfig) -> int:
        """How many parameters the config implies (what the weight files must hold at least)."""
        def count(layers: int) -> int:
            return sum(math.prod(s.shape) for s in self.weights(replace(cfg, num_layers=layers)).values())
        # every layer holds the same tensors: enumerate one, not num_layers (a config may claim 2^31)
        outside = count(0)
        return outside + cfg.num_layers * (count(1) - outside)


class UnsupportedArchitecture(ValueError):
    """The config names no architecture this engine runs (the message is a sentence)."""
