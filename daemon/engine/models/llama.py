"""Llama and Mistral: the decoder of engine/model.py as written (HF names, fused in the engine).

Qwen2 (qwen2.py) differs only in its config: QKV projections always carry a bias.
"""

from __future__ import annotations

from typing import Any

from .base import Architecture, ModelConfig, WeightSlot


def decoder_config(cfg: dict[str, Any], arch: str, *, qkv_bias: bool = False) -> ModelConfig:
    """config.json -> ModelConfig for a Llama-shaped decoder."""
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    # transformers >= 5 writes rope settings into "rope_parameters".
    rope_params = cfg.get("rope_parameters") or {}
    theta = float(cfg.get("rope_theta") or rope_params.get("rope_theta") or 10000.0)
    scaling = cfg.get("rope_scaling") or (rope_params if rope_params else None)
    if scaling is not None:
        kind = scaling.get("rope_type") or scaling.get("type") or "default"
        scaling = None if kind == "default" else dict(scaling, rope_type=kind)
    eos = cfg.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
    return ModelConfig(
        architecture=arch,
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(cfg["intermediate_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias or bool(cfg.get("attention_bias", False)),
        eos_token_ids=eos_ids,
        bos_token_id=cfg.get("bos_token_id"),
        sliding_window=(int(cfg["sliding_window"]) if cfg.get("sliding_window")
                        and cfg.get("use_sliding_window", True) else None),
    )


def decoder_weights(cfg: ModelConfig) -> dict[str, WeightSlot]:
    """HF tensor names -> CausalLM parameters, q/k/v and gate/up fused into one matrix each."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    out = {
        "model.embed_tokens.weight": WeightSlot("embed_tokens.weight", 0, (cfg.vocab_size, h)),
        "model.norm.weight": WeightSlot("norm.weight", 0, (h,)),
    }
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = WeightSlot("lm_head.weight", 0, (cfg.vocab_size, h))
    for i in range(cfg.num_layers):
        hf, ours = f"model.layers.{i}.", f"layers.{i}."
        for name, row, rows in (("q", 0, q), ("k", q, kv), ("v", q + kv, kv)):
            out[f"{hf}self_attn.{name}_proj.weight"] = WeightSlot(f"{ours}self_attn.qkv_proj.weight", row, (rows, h))
            if cfg.qkv_bias:
                out[f"{hf}self_attn.{name}_proj.bias"] = WeightSlot(f"{ours}self_attn.qkv_proj.bias", row, (rows,))
        out[f"{hf}self_attn.o_proj.weight"] = WeightSlot(f"{ours}self_attn.o_proj.weight", 0, (h, q))
        out[f"{hf}mlp.gate_proj.weight"] = WeightSlot(f"{ours}mlp.gate_up_proj.weight", 0, (inter, h))
        out[f"{hf}mlp.up_proj.weight"] = WeightSlot(f"{ours}mlp.gate_up_proj.weight", inter, (inter, h))
        out[f"{hf}mlp.down_proj.weight"] = WeightSlot(f"{ours}mlp.down_proj.weight", 0, (h, inter))
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"{hf}{norm}.weight"] = WeightSlot(f"{ours}{norm}.weight", 0, (h,))
    return out


ARCHITECTURE = Architecture(
    family="llama",
    hf_names=("LlamaForCausalLM", "MistralForCausalLM"),
    gguf_names=("llama",),   # llama.cpp converts Mistral checkpoints as "llama" too
    config=decoder_config,
    weights=decoder_weights,
    native_cpu=True,
)
