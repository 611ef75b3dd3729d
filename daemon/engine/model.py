"""The Llama-family decoder (Llama, Qwen2, Mistral shapes) over a paged KV cache.

Which configs and tensor names reach it is decided by the registry in engine/models/.

One readable file in the manner of gpt-fast / nano-vllm: fused QKV and gate/up projections,
RoPE from a precomputed table, grouped-query attention through SDPA. A forward pass takes a
flat batch of tokens from many sequences (prefill chunks and decodes mixed) plus an
`AttentionBatch` saying where each sequence's keys and values live in the cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .models import ModelConfig


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies, with llama3-style or linear scaling when the config asks."""
    dim = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    sc = cfg.rope_scaling
    if not sc:
        return inv
    kind = sc["rope_type"]
    if kind == "linear":
        return inv / float(sc["factor"])
    if kind == "llama3":
        factor = float(sc["factor"])
        low, high = float(sc["low_freq_factor"]), float(sc["high_freq_factor"])
        old_ctx = float(sc["original_max_position_embeddings"])
        low_wl, high_wl = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wl, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wl) * ~(wavelen > low_wl)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"rope_scaling type {kind!r} is not supported (default, linear, llama3)")


@dataclass
class AttentionBatch:
    """Where a step's tokens go in the KV cache and what each sequence attends to.

    Tokens are laid out decodes first (one token each), then each prefill chunk.
    """

    slot_mapping: torch.Tensor                 # [T] flat cache slot per token
    num_decode: int = 0
    decode_block_tables: torch.Tensor | None = None  # [Bd, max_blocks]
    decode_context_lens: torch.Tensor | None = None  # [Bd]
    decode_mask: torch.Tensor | None = None          # [Bd, 1, 1, max_blocks*block_size] bool
    # per prefill chunk: (token start, token end, context length after the chunk, block table)
    prefills: list[tuple[int, int, int, torch.Tensor]] = field(default_factory=list)


class Linear(nn.Linear):
    """nn.Linear that also takes fp32 activations against bf16 weights (CPU kernel path)."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:   # meta weights are overwritten by the loader: no random init
            super().reset_parameters()  # (on meta it would import torch's Python meta kernels: seconds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.weight.dtype:
            from .cpu_kernels import bf16_linear
            return bf16_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        if not self.weight.is_meta:   # as Linear: the loader fills it
            super().reset_parameters()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, **factory: Any) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, **factory))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, **factory: Any) -> None:
        super().__init__()
        self.nh, self.nkv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size, self.kv_size = self.nh * self.hd, self.nkv * self.hd
        self.qkv_proj = Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size,
                                  bias=cfg.qkv_bias, **factory)
        self.o_proj = Linear(self.q_size, cfg.hidden_size, bias=False, **factory)
        self.scale = self.hd ** -0.5

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
        t = x.shape[0]
        qk, v = self.qkv_proj(x).split([self.q_size + self.kv_size, self.kv_size], dim=-1)
        qk = qk.view(t, self.nh + self.nkv, self.hd)
        qk = qk * cos + _rotate_half(qk) * sin          # RoPE on queries and keys at once
        q, k = qk.split([self.nh, self.nkv], dim=1)
        v = v.view(t, self.nkv, self.hd)
        # Write this step's keys and values into their cache slots.
        bs = k_cache.shape[1]
        k_flat = k_cache.view(-1, self.nkv, self.hd)
        v_flat = v_cache.view(-1, self.nkv, self.hd)
        k_flat.index_copy_(0, batch.slot_mapping, k)
        v_flat.index_copy_(0, batch.slot_mapping, v)
        out = torch.empty_like(q)
        nd = batch.num_decode
        if nd:
            out[:nd] = self._decode(q[:nd], k_cache, v_cache, batch)
        for start, end, ctx_len, table in batch.prefills:
            qs = q[start:end]
            n = end - start
            if ctx_len == n:   # no cached prefix: attend to this chunk only
                ks, vs = k[start:end], v[start:end]
            else:
                nb = (ctx_len + bs - 1) // bs
                ks = k_cache[table[:nb]].view(-1, self.nkv, self.hd)[:ctx_len]
                vs = v_cache[table[:nb]].view(-1, self.nkv, self.hd)[:ctx_len]
            out[start:end] = self._prefill(qs, ks, vs, ctx_len)
        return self.o_proj(out.view(t, self.q_size))

    def _decode(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                batch: AttentionBatch) -> torch.Tensor:
        # One query per sequence; its query heads sharing a KV head become that head's
        # "query length", so plain SDPA does grouped-query attention without copying K/V.
        b = q.shape[0]
        tables = batch.decode_block_tables
        ks = k_cache[tables].view(b, -1, self.nkv, self.hd).transpose(1, 2)
        vs = v_cache[tables].view(b, -1, self.nkv, self.hd).transpose(1, 2)
        qg = q.view(b, self.nkv, self.nh // self.nkv, self.hd)
        o = F.scaled_dot_product_attention(qg, ks, vs, attn_mask=batch.decode_mask, scale=self.scale)
        return o.reshape(b, self.nh, self.hd)

    def _prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx_len: int) -> torch.Tensor:
        n = q.shape[0]
        rep = self.nh // self.nkv
        qh = q.transpose(0, 1)                                        # [nh, n, hd]
        kh = k.transpose(0, 1).repeat_interleave(rep, dim=0)          # [nh, ctx, hd]
        vh = v.transpose(0, 1).repeat_interleave(rep, dim=0)
        if ctx_len == n:
            o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=self.scale)
        else:
            pos = torch.arange(ctx_len - n, ctx_len, device=q.device)
            mask = torch.arange(ctx_len, device=q.device)[None, :] <= pos[:, None]
            o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=self.scale)
        return o.transpose(0, 1)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, **factory: Any) -> None:
        super().__init__()
        self.inter = cfg.intermediate_size
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * self.inter, bias=False, **factory)
        self.down_proj = Linear(self.inter, cfg.hidden_size, bias=False, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.inter, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, **factory: Any) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **factory)
        self.self_attn = Attention(cfg, **factory)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **factory)
        self.mlp = MLP(cfg, **factory)

    def forward(self, x, cos, sin, k_cache, v_cache, batch):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, k_cache, v_cache, batch)
        return x + self.mlp(self.post_attention_layernorm(x))


class CausalLM(nn.Module):
    """Decoder plus LM head; parameter names follow HF except the fused projections."""

    def __init__(self, cfg: ModelConfig, max_positions: int, device: torch.device | str,
                 dtype: torch.dtype, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        # Activations, RoPE tables and the KV cache use compute_dtype; it differs from the
        # weights' dtype only for bf16 weights on CPUs without AVX-512 (fp32 compute).
        self.compute_dtype = compute_dtype or dtype
        factory = {"device": device, "dtype": dtype}
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size, **factory)
        self.layers = nn.ModuleList(DecoderLayer(cfg, **factory) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **factory)
        if cfg.tie_word_embeddings:
            self.lm_head_weight = None
        else:
            self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False, **factory)
        self.max_positions = max_positions

    def build_rope(self, device: torch.device) -> None:
        """Precompute cos/sin for every position (after weights are materialised)."""
        inv = rope_inv_freq(self.cfg).to(device)
        freqs = torch.arange(self.max_positions, device=device).float()[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos_table = emb.cos().to(self.compute_dtype)
        self.sin_table = emb.sin().to(self.compute_dtype)

    def lm_weight(self) -> torch.Tensor:
        return self.embed_tokens.weight if self.cfg.tie_word_embeddings else self.lm_head.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]],
                batch: AttentionBatch, logits_index: torch.Tensor) -> torch.Tensor:
        """Returns float32 logits for the tokens at `logits_index` (one per sequence)."""
        x = self.embed_tokens(input_ids).to(self.compute_dtype)
        cos = self.cos_table[positions].unsqueeze(1)
        sin = self.sin_table[positions].unsqueeze(1)
        for layer, (kc, vc) in zip(self.layers, kv):
            x = layer(x, cos, sin, kc, vc, batch)
        x = self.norm(x[logits_index])
        w = self.lm_weight()
        if x.dtype != w.dtype:
            from .cpu_kernels import bf16_linear
            return bf16_linear(x, w)
        return F.linear(x, w).float()
