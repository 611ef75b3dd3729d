"""Turns a step's scheduled chunks into tensors and runs the model once over all of them.

Host-side work per step is a handful of small list-to-tensor copies; every layer sees the
whole batch in one forward (decodes batched, prefill chunks packed behind them).
"""

from __future__ import annotations

import torch

from . import cpu_forward
from .kv_cache import KVCache
from .model import AttentionBatch, CausalLM
from .scheduler import ScheduledChunk


class ModelRunner:
    def __init__(self, model: CausalLM, cache: KVCache, device: torch.device) -> None:
        self.model = model
        self.cache = cache
        self.device = device
        self.bs = cache.block_size
        # Whole steps in one native call where it applies (bf16 on AVX-512 CPUs).
        self.native = cpu_forward.for_model(model, cache, device)

    def _tensor(self, data: list[int]) -> torch.Tensor:
        t = torch.tensor(data, dtype=torch.long)
        return t.to(self.device, non_blocking=True) if self.device.type != "cpu" else t

    @torch.inference_mode()
    def run(self, chunks: list[ScheduledChunk]) -> torch.Tensor:
        """Forward the chunks; float32 logits for each chunk that samples, in chunk order."""
        if self.native is not None:
            return self._run_native(chunks)
        bs = self.bs
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        logits_index: list[int] = []
        decode_tables: list[list[int]] = []
        decode_lens: list[int] = []
        prefills: list[tuple[int, int, int, list[int]]] = []
        num_decode = 0
        for c in chunks:
            seq, start = c.seq, c.start
            begin = len(ids)
            for p in range(start, start + c.length):
                ids.append(seq.token_at(p))
                pos.append(p)
                slots.append(seq.block_table[p // bs] * bs + p % bs)
            ctx = start + c.length
            if c.length == 1:
                num_decode += 1
                decode_tables.append(seq.block_table[: -(-ctx // bs)])
                decode_lens.append(ctx)
            else:
                prefills.append((begin, len(ids), ctx, seq.block_table))
            if c.samples:
                logits_index.append(len(ids) - 1)
        batch = AttentionBatch(slot_mapping=self._tensor(slots), num_decode=num_decode)
        if num_decode:
            width = max(len(t) for t in decode_tables)
            batch.decode_block_tables = self._tensor([t + [0] * (width - len(t)) for t in decode_tables])
            lens = self._tensor(decode_lens)
            batch.decode_context_lens = lens
            batch.decode_mask = (torch.arange(width * bs, device=self.device)[None, :]
                                 < lens[:, None]).view(num_decode, 1, 1, width * bs)
        batch.prefills = [(b, e, ctx, self._tensor(table)) for b, e, ctx, table in prefills]
        return self.model(self._tensor(ids), self._tensor(pos), self.cache.layers, batch,
                          self._tensor(logits_index))

    def _run_native(self, chunks: list[ScheduledChunk]) -> torch.Tensor:
        bs = self.bs
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        seq_of: list[int] = []
        logit_rows: list[int] = []
        tables: list[list[int]] = []
        for i, c in enumerate(chunks):
            seq, table = c.seq, c.seq.block_table
            for p in range(c.start, c.start + c.length):
                ids.append(seq.token_at(p))
                pos.append(p)
                slots.append(table[p // bs] * bs + p % bs)
            seq_of.extend([i] * c.length)
            tables.append(table[: -(-(c.start + c.length) // bs)])
            if c.samples:
                logit_rows.append(len(ids) - 1)
        width = max(len(t) for t in tables)
        flat = [b for t in tables for b in (*t, *[0] * (width - len(t)))]
        return self.native.run(ids, pos, slots, seq_of, flat, width, logit_rows)
