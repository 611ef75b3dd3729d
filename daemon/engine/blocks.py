"""KV block ids: reference counts, the free list and the prefix cache (engine thread only).

A sequence's block table lists the blocks holding its tokens' keys and values. With prefix
caching on, every block a sequence fills is registered under a hash of its tokens and of
all tokens before it (`chain_hash`: SHA-256, so a prompt cannot be crafted to collide
with another tenant's blocks), started from the request's cache scope (the caller, by
default), so only requests of one scope share blocks. A new sequence whose tokens start the same way takes those
blocks (`match`) instead of recomputing them; blocks are shared read-only, since a
sequence only writes at positions past what it matched. A freed block that is registered
keeps its contents and becomes evictable: it is reused for a new allocation only when no
never-used block is left, least recently freed first, and a later sequence with the same
prefix (or the same sequence after preemption) can still take it back.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Sequence


def chain_hash(parent: bytes, tokens: Sequence[int]) -> bytes:
    """The key of a full block: its tokens and the key of the block before it."""
    return hashlib.sha256(parent + array("q", tokens).tobytes()).digest()


class BlockAllocator:
    def __init__(self, num_blocks: int, prefix_caching: bool = False) -> None:
        self.num_blocks = num_blocks
        self.prefix_caching = prefix_caching
        self._free: deque[int] = deque(range(num_blocks))     # never used, or content dropped
        self._refs = [0] * num_blocks
        self._key_of: dict[int, bytes] = {}                     # registered block -> key
        self._block_of: dict[bytes, int] = {}                   # key -> registered block
        self._evictable: OrderedDict[int, None] = OrderedDict()  # registered, no user: oldest first

    @property
    def num_free(self) -> int:
        """Blocks an allocation can take (never used, or evictable)."""
        return len(self._free) + len(self._evictable)

    @property
    def num_used(self) -> int:
        """Blocks some sequence holds."""
        return self.num_blocks - self.num_free

    @property
    def num_cached(self) -> int:
        """Blocks no sequence holds that still keep a registered prefix."""
        return len(self._evictable)

    def can_allocate(self, n: int) -> bool:
        return self.num_free >= n

    def allocate(self, n: int) -> list[int]:
        if n > self.num_free:
            raise RuntimeError(f"asked for {n} KV blocks with {self.num_free} free")
        out = []
        for _ in range(n):
            if self._free:
                block = self._free.popleft()
            else:
                block, _ = self._evictable.popitem(last=False)
                del self._block_of[self._key_of.pop(block)]
            self._refs[block] = 1
            out.append(block)
        return out

    def free(self, blocks: list[int]) -> None:
        for block in blocks:
            self._refs[block] -= 1
            if self._refs[block] == 0:
                if block in self._key_of:
                    self._evictable[block] = None
                else:
                    self._free.append(block)

    def match(self, keys: list[bytes]) -> list[int]:
        """The registered blocks for the longest run of `keys` from the start, each now held
        once more by the caller (who frees them like allocated blocks)."""
        out = []
        for key in keys:
            block = self._block_of.get(key)
            if block is None:
                break
            if self._refs[block] == 0:
                del self._evictable[block]
            self._refs[block] += 1
            out.append(block)
        return out

    def register(self, block: int, key: bytes) -> None:
        """`block` is full and its keys and values are computed: later sequences may share it.
        A key already registered (the same prefix computed twice at once) keeps its block."""
        if self.prefix_caching and key not in self._block_of and block not in self._key_of:
            self._key_of[block] = key
            self._block_of[key] = block
