"""Sampling rules and stop-string hold-back, on hand-made logits."""

from __future__ import annotations

import torch

from musaops.daemon.engine.api import SamplingParams
from musaops.daemon.engine.sampling import RowFailure, StopMatcher, apply_penalties, make_generator, sample

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


def test_tiny_temperature_and_penalty_stay_finite():
    """1.4e-45 (the smallest fp32 subnormal) used to give inf/NaN probabilities: now a tiny
    temperature samples the maximum and a tiny penalty keeps the logits finite."""
    logits = torch.tensor([[1.0, 3.0, 2.5, -1.0]])
    for sp in (SamplingParams(temperature=1.4e-45, seed=1),
               SamplingParams(temperature=1.4e-45, repetition_penalty=1.4e-45, seed=1),
               SamplingParams(temperature=1e-2, repetition_penalty=1.4e-45, seed=1)):
        g = make_generator(sp, CPU)
        got = sample(logits.clone(), [sp], [[0, 1]], [[]], [g])
        assert got in ([1], [0]), (sp, got)   # penalised: 1.0 / 1.4e-45 is clamped, still finite


def test_a_row_without_a_finite_distribution_fails_alone():
    logits = torch.tensor([[1.0, 3.0, 2.5, -1.0], [0.5, 0.1, 2.0, 0.0], [float("nan")] * 4])
    good = SamplingParams(temperature=0.7, seed=3)
    nan_temp = SamplingParams(temperature=float("nan"), seed=3)
    got = sample(logits, [good, nan_temp, good], [[], [], []], [[], [], []],
                 [make_generator(p, CPU) for p in (good, nan_temp, good)])
    assert isinstance(got[0], int)
    assert isinstance(got[1], RowFailure) and "no finite distribution" in got[1].reason
    assert isinstance(got[2], RowFailure) and "every logit is NaN" in got[2].reason
