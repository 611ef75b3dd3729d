"""The child's Prometheus text (vLLM's /metrics) -> EngineStats and its cache layout.

vLLM names its series `vllm:<name>` with labels `engine` (one per data-parallel engine)
and `model_name`; series of the same name are summed over engines. Names are vLLM
0.28-0.32's; a missing series reads as 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..engine.api import EngineStats

_LINE = re.compile(r'^(vllm:[A-Za-z0-9_:]+)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Scrape:
    values: dict[str, float]                 # series name -> sum over label sets
    labels: dict[str, list[dict[str, str]]]  # series name -> each sample's labels (info series)

    def get(self, name: str) -> float:
        return self.values.get("vllm:" + name, 0.0)

    def cache_config(self) -> dict[str, str]:
        rows = self.labels.get("vllm:cache_config_info") or [{}]
        return rows[0]


def parse(text: str) -> Scrape:
    values: dict[str, float] = {}
    labels: dict[str, list[dict[str, str]]] = {}
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
        if name.endswith("_created") or name.endswith("_bucket"):
            continue
        values[name] = values.get(name, 0.0) + value
        if raw_labels and (name.endswith("_info") or name == "vllm:request_success_total"):
            lab = dict(_LABEL.findall(raw_labels))
            labels.setdefault(name, []).append(lab)
            if name == "vllm:request_success_total" and lab.get("finished_reason") == "error":
                failed += value
    values["musad:requests_failed"] = failed
    return Scrape(values, labels)


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
