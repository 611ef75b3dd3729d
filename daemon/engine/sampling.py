"""Token sampling and stop-string matching.

Greedy rows are decided with one batched argmax. Rows with penalties or temperature go
one by one, each with its own torch.Generator, so a seeded request draws the same numbers
whatever else shares its batch. Stop strings are matched on text, across token
boundaries: text that could still become a stop string is held back until it cannot.

Each row is numerically safe for any finite parameters: penalised logits are clamped to
fp32's finite range, and the row's maximum is subtracted before the temperature divides
it (so a tiny temperature sends the other logits to -inf, never the maximum to +inf or
NaN). A row that still yields no finite distribution fails alone: `sample` returns a
`RowFailure` for it and the engine ends that request with FINISH_REASON_ERROR.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RowFailure:
    """A row that could not be sampled: the sentence its request fails with."""

    reason: str


def sample_row(row: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    big = torch.finfo(row.dtype).max
    row = torch.nan_to_num(row, nan=float("-inf"), posinf=big, neginf=float("-inf"))
    top = row.max()
    if not torch.isfinite(top):
        raise ValueError("every logit is NaN or -inf")
    if p.temperature == 0 or gen is None:
        return int(row.argmax())
    row = (row - top) / p.temperature   # <= 0 everywhere and exactly 0 at the maximum
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
    # softmax gives values in [0, 1] or NaN, so one sum (one sync) says finite and non-zero
    if not float(probs.sum()) > 0:
        raise ValueError(f"temperature {p.temperature:g} and top_p {p.top_p:g} give no finite distribution")
    return int(torch.multinomial(probs, 1, generator=gen))


def sample(logits: torch.Tensor, params: list[SamplingParams], prompts: list[list[int]],
           outputs: list[list[int]], gens: list[torch.Generator | None]) -> list[int | RowFailure]:
    """One token per row of float32 `logits` [rows, vocab], or a RowFailure for a row that
    cannot be sampled (the other rows are unaffected)."""
    tokens: list[int | RowFailure] = logits.argmax(dim=-1).tolist()
    for i, p in enumerate(params):
        if _needs_row_work(p):
            try:
                row = apply_penalties(logits[i].clone(), p, prompts[i], outputs[i])
                tokens[i] = sample_row(row, p, gens[i])
            except (ValueError, RuntimeError) as exc:   # torch raises RuntimeError for bad probabilities
                tokens[i] = RowFailure(f"sampling failed for this request: {exc}")
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
