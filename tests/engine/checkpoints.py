"""Tiny seeded checkpoints written with transformers' own model classes, for parity tests.

The weights are re-drawn at a larger scale than HF's init (normal / sqrt(fan_in), a sharper
LM head) so greedy decoding has clear winners and parity is not decided by near-ties.
The tokenizer files are the demo model's (byte-level BPE, ChatML template).
"""

from __future__ import annotations

import pathlib
import shutil

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_hf_checkpoint(out: pathlib.Path, arch: str, tokenizer_dir: pathlib.Path, *, seed: int = 0,
                        tie: bool = False, rope_scaling: dict | None = None,
                        max_shard_size: str | None = None, **shape) -> pathlib.Path:
    """Write `arch` ("llama", "qwen2", "mistral") with seeded weights into `out`."""
    import json

    import transformers

    vocab = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab_size = len(vocab["model"]["vocab"]) + len(
        [t for t in vocab["added_tokens"] if t["content"] not in vocab["model"]["vocab"]])
    kw = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
              rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tie,
              eos_token_id=2, bos_token_id=0)
    kw.update(shape)
    if rope_scaling is not None:
        kw["rope_scaling"] = rope_scaling
    cls_cfg, cls_model = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    }[arch]
    if arch == "mistral":
        kw["sliding_window"] = None
    config = cls_cfg(**kw)
    torch.manual_seed(seed)
    model = cls_model(config).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5)
                if name == "lm_head.weight" or (tie and "embed_tokens" in name):
                    p.mul_(4.0)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
            else:
                p.uniform_(0.8, 1.2)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, safe_serialization=True, **kwargs)
    for f in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / f, out / f)
    return out
