"""Telemetry as the console holds it: one Snapshot per node per interval.

Mirrors telemetry.proto, with unset vendor fields as None (never a made-up zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


NOT_REPORTED = "not reported by this device"


def shown(label: str, fmt: str = "{}") -> Any:
    """A console DeviceSample field: None (not reported) by default, with the label and the
    format the node view's device details use."""
    return field(default=None, metadata={"label": label, "fmt": fmt})


@dataclass(frozen=True, slots=True)  # slots: a back-fill holds many thousands
class DeviceSample:
    """One device reading as the console holds it. Its fields are exactly common.proto's
    DeviceSample fields (tests/unit/test_convert_samples.py checks), so convert fills it by
    name; a new field is one line here, with its label."""

    index: int = 0
    memory_used_bytes: int | None = shown("Memory used", "{:,} bytes")
    memory_total_bytes: int | None = shown("Memory", "{:,} bytes")
    utilization_percent: float | None = shown("Utilisation", "{:.0f} %")
    memory_utilization_percent: float | None = shown("Memory controller busy", "{:.0f} %")
    temperature_celsius: float | None = shown("Temperature", "{:.0f} °C")
    power_watts: float | None = shown("Power", "{:.0f} W")
    power_limit_watts: float | None = shown("Power limit", "{:.0f} W")
    sm_clock_mhz: int | None = shown("Graphics clock", "{} MHz")
    memory_clock_mhz: int | None = shown("Memory clock", "{} MHz")
    fan_speed_percent: float | None = shown("Fan", "{:.0f} %")
    pcie_generation: int | None = shown("PCIe generation", "Gen {}")
    pcie_width: int | None = shown("PCIe width", "x{}")
    ecc_enabled: bool | None = shown("ECC", "{!s}")
    ecc_errors_uncorrected: int | None = shown("Uncorrected ECC errors", "{:,}")
    links_up: int | None = shown("MTLink / NVLink up", "{}")
    links_total: int | None = shown("MTLink / NVLink links", "{}")
    mpc_enabled: bool | None = shown("MPC partitioning", "{!s}")
    healthy: bool | None = shown("Healthy", "{!s}")       # None: the daemon predates the rule
    health_reason: str | None = shown("Health", "{}")

    @property
    def unhealthy(self) -> bool:
        """True only when the daemon says so (unknown is not unhealthy)."""
        return self.healthy is False

    @property
    def memory_percent(self) -> float | None:
        if self.memory_used_bytes is None or not self.memory_total_bytes:
            return None
        return 100.0 * self.memory_used_bytes / self.memory_total_bytes


def device_details(sample: DeviceSample | None) -> list[tuple[str, str]]:
    """(label, value) for every field of the table, in table order; a field the device does
    not report reads NOT_REPORTED (never a made-up zero)."""
    out = []
    for f in fields(DeviceSample):
        if "label" not in f.metadata:
            continue
        v = getattr(sample, f.name) if sample is not None else None
        if isinstance(v, bool):
            v = ("on" if v else "off") if f.name != "healthy" else ("yes" if v else "no")
        out.append((f.metadata["label"], NOT_REPORTED if v is None else f.metadata["fmt"].format(v)))
    return out


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
