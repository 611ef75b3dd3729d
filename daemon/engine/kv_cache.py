"""Paged KV cache: fixed-size blocks in one preallocated tensor, handed out per sequence.

As in vLLM / nano-vllm, a sequence owns a block table (a list of block ids); token t of the
sequence lives in slot `table[t // block_size] * block_size + t % block_size`. The budget
is a fraction of free device memory (of available RAM on CPU).
"""

from __future__ import annotations

import psutil
import torch

from .models import ModelConfig


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on the device (available RAM for the CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "musa":
        free, _total = torch.musa.mem_get_info(device)  # type: ignore[attr-defined]
        return int(free)
    return int(psutil.virtual_memory().available)


def bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    elem = torch.tensor([], dtype=dtype).element_size()
    return cfg.num_layers * 2 * block_size * cfg.num_kv_heads * cfg.head_dim * elem


class KVCache:
    """The cache tensors: per layer a (keys, values) pair of [blocks, block_size, kv_heads, head_dim]."""

    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.storage = torch.zeros(cfg.num_layers, 2, num_blocks, block_size, cfg.num_kv_heads,
                                   cfg.head_dim, dtype=dtype, device=device)
        self.layers = [(self.storage[i, 0], self.storage[i, 1]) for i in range(cfg.num_layers)]

    @property
    def nbytes(self) -> int:
        return self.storage.nbytes
