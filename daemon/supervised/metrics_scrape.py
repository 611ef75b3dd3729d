"""The child's Prometheus text (vLLM's /metrics) -> EngineStats, its latency histograms
and its cache layout.

vLLM names its series `vllm:<name>` with labels `engine` (one per data-parallel engine)
and `model_name`; series of the same name are summed over engines (histogram buckets per
`le`). Names are vLLM 0.28-0.32's; a missing series reads as 0, a missing histogram is
left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..engine.api import EngineHistogram, EngineStats

_LINE = re.compile(r'^(vllm:[A-Za-z0-9_:]+)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

# The child's latency histograms musad re-exports (vLLM's name without `vllm:`).
LATENCY_HISTOGRAMS = {
    "time_to_first_token_seconds": "Time to first token measured by the engine, s.",
    "inter_token_latency_seconds": "Gap between output tokens measured by the engine, s.",
    "e2e_request_latency_seconds": "Request latency measured by the engine, arrival to last token, s.",
    "request_queue_time_seconds": "Time in the engine's waiting queue, s.",
    "request_inference_time_seconds": "Time in the engine's running batch (prefill and decode), s.",
    "request_prefill_time_seconds": "Prefill time measured by the engine, s.",
    "request_decode_time_seconds": "Decode time measured by the engine, s.",
}


@dataclass(frozen=True)
class Scrape:
    values: dict[str, float]                 # series name -> sum over label sets
    labels: dict[str, list[dict[str, str]]]  # series name -> each sample's labels (info series)
    buckets: dict[str, dict[float, float]]   # histogram name -> upper bound -> cumulative count

    def get(self, name: str) -> float:
        return self.values.get("vllm:" + name, 0.0)

    def cache_config(self) -> dict[str, str]:
        rows = self.labels.get("vllm:cache_config_info") or [{}]
        return rows[0]


def parse(text: str) -> Scrape:
    values: dict[str, float] = {}
    labels: dict[str, list[dict[str, str]]] = {}
    buckets: dict[str, dict[float, float]] = {}
    failed = 0.0
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        name, raw_labels, raw_value = m.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        if name.endswith("_bucket"):
            try:
                bound = float(dict(_LABEL.findall(raw_labels or ""))["le"])
            except (KeyError, ValueError):
                continue
            per_le = buckets.setdefault(name[:-len("_bucket")], {})
            per_le[bound] = per_le.get(bound, 0.0) + value
            continue
        if name.endswith("_created"):
            continue
        values[name] = values.get(name, 0.0) + value
        if raw_labels and (name.endswith("_info") or name == "vllm:request_success_total"):
            lab = dict(_LABEL.findall(raw_labels))
            labels.setdefault(name, []).append(lab)
            if name == "vllm:request_success_total" and lab.get("finished_reason") == "error":
                failed += value
    values["musad:requests_failed"] = failed
    return Scrape(values, labels, buckets)


def histograms(scrape: Scrape) -> tuple[EngineHistogram, ...]:
    """The LATENCY_HISTOGRAMS the child exported, summed over its engines."""
    out = []
    for name, doc in LATENCY_HISTOGRAMS.items():
        per_le = scrape.buckets.get("vllm:" + name)
        if not per_le:
            continue
        count = scrape.get(name + "_count")
        rows = sorted(per_le.items())
        if rows[-1][0] != float("inf"):
            rows.append((float("inf"), count))
        out.append(EngineHistogram(name, doc, tuple(rows), scrape.get(name + "_sum")))
    return tuple(out)


def kv_layout(scrape: Scrape) -> tuple[int, int, int]:
    """(block size in tokens, blocks, KV cache bytes) from vllm:cache_config_info."""
    cc = scrape.cache_config()

    def num(key: str) -> int:
        try:
            return int(float(cc.get(key, "0")))
        except ValueError:
            return 0

    blocks = num("num_gpu_blocks") or num("num_cpu_blocks")
    return num("block_size"), blocks, num("kv_cache_memory_bytes")


def engine_stats(scrape: Scrape, kv_blocks_total: int) -> EngineStats:
    usage = scrape.get("kv_cache_usage_perc")
    return EngineStats(
        running=int(scrape.get("num_requests_running")),
        waiting=int(scrape.get("num_requests_waiting")),
        kv_blocks_used=int(round(usage * kv_blocks_total)),
        kv_blocks_total=kv_blocks_total,
        prompt_tokens_total=int(scrape.get("prompt_tokens_total")),
        generation_tokens_total=int(scrape.get("generation_tokens_total")),
        requests_total=int(scrape.get("request_success_total")),
        requests_failed=int(scrape.values.get("musad:requests_failed", 0.0)),
        preemptions_total=int(scrape.get("num_preemptions_total")),
        prefix_cache_hit_tokens_total=int(scrape.get("prefix_cache_hits_total")),
    )
