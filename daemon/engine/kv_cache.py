"""Paged KV cache: fixed-size blocks in one preallocated tensor, handed out per sequence.

As in vLLM / nano-vllm, a sequence owns a block table (a list of block ids); token t of the
sequence lives in slot `table[t // block_size] * block_size + t % block_size`. The budget
is a fraction of free device memory (of available RAM on CPU).
"""

from __future__ import annotations

from collections import deque

import psutil
import torch

from .model import ModelConfig


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


class BlockAllocator:
    """Free list of block ids; not thread-safe (used only on the engine thread)."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def can_allocate(self, n: int) -> bool:
        return len(self._free) >= n

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise RuntimeError(f"asked for {n} KV blocks with {len(self._free)} free")
        return [self._free.popleft() for _ in range(n)]

    def free(self, blocks: list[int]) -> None:
        self._free.extend(blocks)
