"""Prefix caching: time to first token for requests that share a long system prompt.

The issue's 0.4 B Llama shape (bench_engine.write_model, bf16, seeded weights) serves
requests one after another, each a 1,024-token system prompt followed by its own 32-token
question, 8 new tokens each. Baseline, measured in the same run: the same engine with
prefix caching off, which computes every prompt in full. Reports the TTFT of the first
request and the median TTFT of the others both ways, their ratio, the prompt tokens the
cache served, and whether the generated texts are the same both ways.

`--quick` uses 6 layers and a 512-token system prompt; stdout is always one JSON line;
without `--json` a readable summary also goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bench_engine import SHAPE, write_model


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def run(model_dir: Path, prompts: list[str], caching: bool, backend: str) -> dict:
    from musaops.daemon.engine import load_engine
    from musaops.daemon.engine.api import (DeviceTarget, EngineSpec, GenerationRequest, GenerationResult,
                                           SamplingParams)

    spec = EngineSpec(dtype="bfloat16", max_batch=4, max_context=2048, kv_cache_fraction=0.1,
                      prefix_caching=caching)
    engine = load_engine(model_dir, spec, DeviceTarget(backend))
    sp = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)

    async def one(i: int) -> tuple[str, float]:
        text = ""
        async for item in engine.generate(GenerationRequest(f"r{i}", prompt=prompts[i], sampling=sp)):
            if isinstance(item, GenerationResult):
                return text, item.metrics.ttft_s * 1e3
            text += item.text
        raise RuntimeError("no result")

    async def all_in_turn() -> list[tuple[str, float]]:
        return [await one(i) for i in range(len(prompts))]

    try:
        done = asyncio.run(all_in_turn())
        hits = engine.stats().prefix_cache_hit_tokens_total
    finally:
        engine.close()
    return {"texts": [t for t, _ in done], "first_ttft_ms": done[0][1],
            "later_ttft_p50_ms": statistics.median(ms for _, ms in done[1:]), "cache_hit_tokens": hits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 layers, 512-token system prompt")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    layers, system_len, requests = (6, 512, 4) if args.quick else (24, 1024, 6)
    if args.device == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    rng = random.Random(3)
    words = lambda n: " ".join(f"w{rng.randrange(3, SHAPE['vocab_size'])}" for _ in range(n))  # noqa: E731
    system = words(system_len)
    prompts = [f"{system} {words(32)}" for _ in range(requests)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "m"
        write_model(model_dir, layers)
        off = run(model_dir, prompts, False, args.device)
        on = run(model_dir, prompts, True, args.device)
    result = {
        "bench": "prefix_cache", "device": args.device, "layers": layers, "system_prompt_tokens": system_len,
        "question_tokens": 32, "requests": requests, "baseline": "the same engine with prefix caching off",
        "off_first_ttft_ms": off["first_ttft_ms"], "off_later_ttft_p50_ms": off["later_ttft_p50_ms"],
        "on_first_ttft_ms": on["first_ttft_ms"], "on_later_ttft_p50_ms": on["later_ttft_p50_ms"],
        "later_ttft_speedup": off["later_ttft_p50_ms"] / on["later_ttft_p50_ms"],
        "cache_hit_tokens": on["cache_hit_tokens"], "outputs_identical": on["texts"] == off["texts"],
    }
    if not args.json:
        for key, value in result.items():
            log(f"{key:>24}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
