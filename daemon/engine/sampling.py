"""Token sampling and stop-string matching.

Greedy rows are decided with one batched argmax. Rows with penalties or temperature go
one by one, each with its own torch.Generator, so a seeded request draws the same numbers
whatever else shares its batch. Stop strings are matched on text, across token
boundaries: text that could still become a stop string is held back until it cannot.
"""

from __future__ import annotations

import secrets

import torch

from .api import SamplingParams


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    if params.temperature == 0:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
    return gen


def _needs_row_work(p: SamplingParams) -> bool:
    return (p.temperature != 0 or p.repetition_penalty != 1.0 or p.frequency_penalty != 0.0
            or p.presence_penalty != 0.0)


def apply_penalties(row: torch.Tensor, p: SamplingParams, prompt_ids: list[int],
                    output_ids: list[int]) -> torch.Tensor:
    """HF repetition penalty (over prompt and output), OpenAI frequency/presence (output)."""
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), device=row.device, dtype=torch.long)
        if seen.numel():
            vals = row[seen]
            row[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if output_ids and (p.frequency_penalty != 0.0 or p.presence_penalty != 0.0):
        ids = torch.tensor(output_ids, device=row.device, dtype=torch.long)
        counts = torch.bincount(ids, minlength=row.shape[0]).to(row.dtype)
        row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)
    return row


def sample_row(row: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    if p.temperature == 0 or gen is None:
        return int(row.argmax())
    row = row / p.temperature
    if p.top_k > 0 and p.top_k < row.shape[0]:
        kth = torch.topk(row, p.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    probs = torch.softmax(row, dim=-1)
    if p.top_p < 1.0:
        sorted_p, idx = probs.sort(descending=True)
        cum = sorted_p.cumsum(-1)
        drop = (cum - sorted_p) > p.top_p   # keep the smallest prefix reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, idx, sorted_p)
    return int(torch.multinomial(probs, 1, generator=gen))


def sample(logits: torch.Tensor, params: list[SamplingParams], prompts: list[list[int]],
           outputs: list[list[int]], gens: list[torch.Generator | None]) -> list[int]:
    """One token per row of float32 `logits` [rows, vocab]."""
    tokens = logits.argmax(dim=-1).tolist()
    for i, p in enumerate(params):
        if _needs_row_work(p):
            row = apply_penalties(logits[i].clone(), p, prompts[i], outputs[i])
            tokens[i] = sample_row(row, p, gens[i])
    return tokens


class StopMatcher:
    """Finds stop strings in a growing text and says how much text is safe to emit."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)

    def check(self, text: str, emitted: int) -> tuple[int, str]:
        """Returns (end of the text safe to emit, the stop string matched or "").

        A match ends the output where the stop string begins; otherwise the longest tail of
        `text` that is a proper prefix of some stop string is held back.
        """
        if not self.stops:
            return len(text), ""
        best, found = -1, ""
        for s in self.stops:
            at = text.find(s, max(0, emitted))
            if at != -1 and (best == -1 or at < best):
                best, found = at, s
        if found:
            return best, found
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text) - emitted), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        return len(text) - hold, ""
