"""Sampling rules and stop-string hold-back, on hand-made logits."""

from __future__ import annotations

import torch

from musaops.daemon.engine.api import SamplingParams
from musaops.daemon.engine.sampling import StopMatcher, apply_penalties, make_generator, sample

CPU = torch.device("cpu")


def test_stop_matcher_holds_back_possible_prefixes():
    m = StopMatcher(("<|end|>", "STOP"))
    assert m.check("hello <|e", 0) == (6, "")        # "<|e" could start "<|end|>"
    assert m.check("hello <|x", 0) == (9, "")
    assert m.check("hello <|end|> more", 6) == (6, "<|end|>")
    assert m.check("aSTO", 0) == (1, "")
    assert StopMatcher(()).check("abc", 0) == (3, "")


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.tensor([[0.1, 2.0, 1.9, -1.0]] * 2)
    for sp in (SamplingParams(temperature=1.0, top_k=1, seed=1), SamplingParams(temperature=5.0, top_p=0.01, seed=2)):
        gens = [make_generator(sp, CPU) for _ in range(2)]
        for _ in range(20):
            assert sample(logits.clone(), [sp, sp], [[], []], [[], []], gens) == [1, 1]


def test_penalties():
    row = torch.tensor([2.0, -2.0, 1.0, 0.0])
    out = apply_penalties(row.clone(), SamplingParams(repetition_penalty=2.0), [0], [1])
    assert out.tolist() == [1.0, -4.0, 1.0, 0.0]
    out = apply_penalties(row.clone(), SamplingParams(frequency_penalty=0.5, presence_penalty=1.0), [], [2, 2])
    assert out.tolist() == [2.0, -2.0, -1.0, 0.0]


def test_same_seed_same_draws():
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(0))
    sp = SamplingParams(temperature=1.0, seed=7)
    runs = []
    for _ in range(2):
        g = make_generator(sp, CPU)
        runs.append([sample(logits.clone(), [sp], [[]], [[]], [g])[0] for _ in range(30)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1
