"""Continuous batching: which sequences run this step, and how many tokens each computes.

Every step: each running sequence that is decoding gets one token; then prompt tokens are
handed out up to a per-step budget (chunked prefill), first to running sequences still in
their prompt, then to waiting ones in arrival order while the running limit allows. When a
decode needs a KV block and none is free, the newest running sequence is preempted: its
blocks are freed and it goes back to the head of the queue, to be recomputed later (its
generated tokens are kept, so nothing is lost). With prefix caching (blocks.py), a sequence
being admitted first takes the cached blocks of its longest known prefix, and only the
rest is computed; a preempted sequence usually finds its own blocks still cached.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .api import FinishReason, SamplingParams
from .blocks import BlockAllocator, chain_hash


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One request's tokens and its place in the cache; touched only on the engine thread
    (except `sink`, set once before it is queued)."""

    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams
    max_tokens: int                       # after clamping to the context
    arrival: float = field(default_factory=time.monotonic)
    output_ids: list[int] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    block_keys: list[bytes] = field(default_factory=list)  # prefix-cache keys of full blocks so far
    cache_scope: bytes = b""              # the first block's key starts from it (api.GenerationRequest)
    num_computed: int = 0                 # tokens whose K/V are in the cache
    status: SeqStatus = SeqStatus.WAITING
    finish_reason: FinishReason | None = None
    sink: Any = None                      # the engine's per-request state (queue, metrics)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    def token_at(self, i: int) -> int:
        n = len(self.prompt_ids)
        return self.prompt_ids[i] if i < n else self.output_ids[i - n]


@dataclass
class ScheduledChunk:
    seq: Sequence
    start: int        # first token position computed this step
    length: int       # tokens computed this step

    @property
    def samples(self) -> bool:
        """This chunk reaches the end of the sequence, so a new token is sampled."""
        return self.start + self.length == self.seq.num_tokens


class Scheduler:
    def __init__(self, allocator: BlockAllocator, block_size: int, max_batch: int,
                 prefill_token_budget: int) -> None:
        self.alloc = allocator
        self.block_size = block_size
        self.max_batch = max_batch
        self.budget = prefill_token_budget
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0
        self.prefix_hit_tokens = 0   # prompt tokens taken from the prefix cache, not computed

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _blocks_needed(self, seq: Sequence, upto: int) -> int:
        return max(0, -(-upto // self.block_size) - len(seq.block_table))

    def _grow(self, seq: Sequence, upto: int) -> bool:
        need = self._blocks_needed(seq, upto)
        if not self.alloc.can_allocate(need):
            return False
        seq.block_table.extend(self.alloc.allocate(need))
        return True

    def free(self, seq: Sequence) -> None:
        self.alloc.free(seq.block_table)
        seq.block_table = []
        seq.num_computed = 0

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out of the scheduler (finished or cancelled) and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.free(seq)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.free(seq)
        seq.status = SeqStatus.WAITING
        self.waiting.appendleft(seq)
        self.preemptions += 1

    def _keys(self, seq: Sequence, blocks: int) -> list[bytes]:
        """Prefix-cache keys of the sequence's first `blocks` full blocks (computed once)."""
        bs, keys = self.block_size, seq.block_keys
        while len(keys) < blocks:
            i = len(keys)
            tokens = [seq.token_at(p) for p in range(i * bs, (i + 1) * bs)]
            keys.append(chain_hash(keys[-1] if keys else seq.cache_scope, tokens))
        return keys[:blocks]

    def _match_prefix(self, seq: Sequence) -> None:
        """Start a sequence being admitted from its longest cached prefix. At least its last
        token is left to compute: its logits are what the step is for."""
        if not self.alloc.prefix_caching or seq.block_table:
            return
        seq.block_table = self.alloc.match(self._keys(seq, (seq.num_tokens - 1) // self.block_size))
        seq.num_computed = len(seq.block_table) * self.block_size

    def computed(self, seq: Sequence, upto: int) -> None:
        """After a step: tokens [0, upto) of `seq` have their K/V in the cache. Blocks that
        became full are registered in the prefix cache."""
        done, seq.num_computed = seq.num_computed // self.block_size, upto
        full = upto // self.block_size
        if self.alloc.prefix_caching and full > done:
            for i, key in enumerate(self._keys(seq, full)[done:], start=done):
                self.alloc.register(seq.block_table[i], key)

    def _grow_or_preempt(self, seq: Sequence, upto: int, chunks: list[ScheduledChunk]) -> bool:
        """Find blocks for `seq` up to token `upto`, preempting the newest running sequences
        (possibly `seq` itself) until they fit. False when `seq` was preempted."""
        while not self._grow(seq, upto):
            victim = self.running[-1]
            self._preempt(victim)
            chunks[:] = [c for c in chunks if c.seq is not victim]
            if victim is seq:
                return False
        return True

    def schedule(self) -> list[ScheduledChunk]:
        chunks: list[ScheduledChunk] = []
        budget = self.budget
        # 1. Running sequences, oldest first: one token for decodes, a budgeted chunk for
        #    those still in their prompt. Preempt the newest when blocks run out.
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            left = seq.num_tokens - seq.num_computed
            n = 1 if left == 1 else min(left, budget)
            if n <= 0:
                i += 1
                continue
            if not self._grow_or_preempt(seq, seq.num_computed + n, chunks):
                break  # seq was the newest; everything older is scheduled
            chunks.append(ScheduledChunk(seq, seq.num_computed, n))
            if left > 1:
                budget -= n
            i += 1
        # 2. Admit waiting sequences in arrival order while budget, slots and blocks allow.
        while self.waiting and budget > 0 and len(self.running) < self.max_batch:
            seq = self.waiting[0]
            self._match_prefix(seq)
            n = min(seq.num_tokens - seq.num_computed, budget)
            if not self._grow(seq, seq.num_computed + n):
                self.free(seq)   # the matched blocks go back (still cached) until it fits
                break
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            self.prefix_hit_tokens += seq.num_computed
            chunks.append(ScheduledChunk(seq, seq.num_computed, n))
            budget -= n
        # Single-token chunks first (the model's batched decode path), then longer chunks.
        chunks.sort(key=lambda c: c.length != 1)
        return chunks
