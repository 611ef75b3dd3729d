"""The host CPU as the device of last resort: one DeviceInfo, RAM as its memory (psutil).

Utilisation is computed from this object's own cpu_times deltas (psutil.cpu_percent keeps
one process-wide baseline, which the host sampler also uses). The temperature comes from a
CPU hwmon sensor when the kernel exposes one (coretemp, k10temp, ...); clocks, power and
memory-controller load have no portable source and stay None.
"""

from __future__ import annotations

import glob
import os
import platform
import threading
from types import ModuleType

import psutil

from .base import BackendName, DeviceInfo, DeviceSample, check_index, pct

# hwmon driver names that report a CPU package/die temperature as temp1_input.
_CPU_HWMON_NAMES = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "soc_thermal")


def cpu_model_name(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's marketing name from /proc/cpuinfo, else platform's guess, else "CPU"."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                # x86: "model name"; some ARM kernels: "Model name" or "Hardware".
                if key.strip().lower() in ("model name", "hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


# ISA extensions that decide how the engine runs on this CPU, reported as the CPU device's
# `capability` (space-separated, in this order): bf16 weights run through the native
# forward with any of NATIVE_BF16_FLAGS (daemon/engine/cpu_forward.py: the bf16 instruction
# with avx512_bf16 / amx_bf16, bf16 widened in registers with avx512f alone), through the
# AVX2 kernel otherwise.
ENGINE_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
NATIVE_BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (x86 "flags", ARM "Features"); empty if unknown."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def engine_isa(flags: set[str] | None = None) -> str:
    """The capability string of the CPU device, e.g. "avx2 fma avx512f avx512_bf16"."""
    flags = cpu_flags() if flags is None else flags
    return " ".join(f for f in ENGINE_ISA_FLAGS if f in flags)


def _find_cpu_temperature_file() -> str | None:
    for name_file in sorted(glob.glob("/sys/class/hwmon/hwmon*/name")):
        try:
            with open(name_file, encoding="ascii", errors="replace") as f:
                name = f.read().strip()
        except OSError:
            continue
        candidate = os.path.join(os.path.dirname(name_file), "temp1_input")
        if name in _CPU_HWMON_NAMES and os.access(candidate, os.R_OK):
            return candidate
    return None


class CpuAccelerator:
    """The host CPU (index 0) with host RAM as device memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._info = [
            DeviceInfo(
                index=0,
                name=cpu_model_name(),
                uuid="",
                backend="cpu",
                memory_total_bytes=int(psutil.virtual_memory().total),
                capability=engine_isa(),
            )
        ]
        self._temp_file = _find_cpu_temperature_file()
        self._last_times = psutil.cpu_times()

    @property
    def backend(self) -> BackendName:
        return "cpu"

    @property
    def torch_device_type(self) -> str:
        return "cpu"

    def info(self) -> list[DeviceInfo]:
        return list(self._info)

    def _utilization(self) -> float | None:
        now = psutil.cpu_times()
        with self._lock:
            last, self._last_times = self._last_times, now
        busy_fields = ("user", "nice", "system", "irq", "softirq", "steal")
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (last.idle + getattr(last, "iowait", 0.0))
        busy = sum(getattr(now, f, 0.0) - getattr(last, f, 0.0) for f in busy_fields)
        total = busy + idle
        return pct(100.0 * busy / total) if total > 0 else None

    def _temperature(self) -> float | None:
        if self._temp_file is None:
            return None
        try:
            with open(self._temp_file, encoding="ascii") as f:
                return int(f.read().strip()) / 1000.0
        except (OSError, ValueError):
            return None

    def sample(self) -> list[DeviceSample]:
        vm = psutil.virtual_memory()
        return [
            DeviceSample(
                index=0,
                memory_used_bytes=int(vm.total - vm.available),
                memory_total_bytes=int(vm.total),
                utilization_percent=self._utilization(),
                temperature_celsius=self._temperature(),
            )
        ]

    def memory_free_bytes(self, index: int = 0) -> int:
        check_index(index, 1, "cpu")
        return int(psutil.virtual_memory().available)

    def load_torch(self) -> ModuleType:
        import torch

        return torch

    def close(self) -> None:
        pass
