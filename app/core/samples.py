"""Telemetry as the console holds it: one Snapshot per node per interval.

Mirrors telemetry.proto, with unset vendor fields as None (never a made-up zero).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)  # slots: a back-fill holds many thousands
class DeviceSample:
    index: int
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    utilization_percent: float | None = None
    memory_utilization_percent: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None

    @property
    def memory_percent(self) -> float | None:
        if self.memory_used_bytes is None or not self.memory_total_bytes:
            return None
        return 100.0 * self.memory_used_bytes / self.memory_total_bytes


@dataclass(frozen=True, slots=True)  # slots: a back-fill holds many thousands
class HostSample:
    cpu_percent: float = 0.0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    load_average_1m: float = 0.0


@dataclass(frozen=True, slots=True)  # slots: a back-fill holds many thousands
class ModelStatsSample:
    model: str
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    generation_tokens_per_second: float = 0.0
    prompt_tokens_per_second: float = 0.0
    ttft_p50_ms: float = 0.0
    ttft_p95_ms: float = 0.0
    ttft_p99_ms: float = 0.0
    itl_p50_ms: float = 0.0
    itl_p95_ms: float = 0.0
    itl_p99_ms: float = 0.0
    e2e_p50_ms: float = 0.0
    e2e_p99_ms: float = 0.0
    requests_total: int = 0
    requests_failed: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    preemptions_total: int = 0
    prefix_cache_hit_tokens_total: int = 0


@dataclass(frozen=True, slots=True)  # slots: a back-fill holds many thousands
class Snapshot:
    time_unix_ms: int
    backfill: bool = False
    host: HostSample = HostSample()
    devices: tuple[DeviceSample, ...] = ()
    models: tuple[ModelStatsSample, ...] = ()

    @property
    def tokens_per_second(self) -> float:
        return sum(m.generation_tokens_per_second for m in self.models)

    @property
    def running(self) -> int:
        return sum(m.running for m in self.models)

    @property
    def waiting(self) -> int:
        return sum(m.waiting for m in self.models)
