"""Device sampling cost: musad's MUSA back end against a naive per-field pymtml reader.

Runs on the stub libmtml.so (eight MTT S5000 boards, tests/stubs/mtml_stub.c, compiled
with gcc), so the figures measure the Python/ctypes overhead of a sample, which is what
the daemon pays on top of the driver. Baseline: reading the same fields through pymtml's
NVML-compatible helpers, which look the device up and open/free a GPU or memory handle on
every call (what a straight port of NVML code does). musad opens handles once and reads a
batch per sample (nvitop's habit).

    python tests/benchmarks/bench_devices.py [--quick]
prints one JSON object: microseconds per sample (all eight boards, every field) for both,
the ratio, the CPU backend's cost, and the share of one core sampling takes at 10 Hz.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "stubs"))


def _per_call_us(fn, rounds: int) -> float:
    fn()  # warm up (function-pointer caches, first-call costs)
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - t0) / rounds * 1e6


def child(rounds: int) -> dict:
    import pymtml as m

    from musaops.daemon.devices.cpu import CpuAccelerator
    from musaops.daemon.devices.musa import MusaAccelerator

    acc = MusaAccelerator()
    count = len(acc.info())

    def naive() -> list:
        out = []
        for i in range(count):
            h = m.nvmlDeviceGetHandleByIndex(i)
            mem = m.nvmlDeviceGetMemoryInfo(h)
            util = m.nvmlDeviceGetUtilizationRates(h)
            out.append((mem.used, mem.total, util.gpu, util.memory,
                        m.nvmlDeviceGetTemperature(h, m.NVML_TEMPERATURE_GPU),
                        m.nvmlDeviceGetPowerUsage(h) / 1000.0,
                        m.nvmlDeviceGetClockInfo(h, m.NVML_CLOCK_SM),
                        m.nvmlDeviceGetClockInfo(h, m.NVML_CLOCK_MEM)))
        return out

    ours_us = _per_call_us(acc.sample, rounds)
    naive_us = _per_call_us(naive, rounds)
    cpu = CpuAccelerator()
    cpu_us = _per_call_us(cpu.sample, rounds)
    acc.close()
    return {
        "bench": "devices",
        "devices": count,
        "rounds": rounds,
        "musa_sample_us": round(ours_us, 1),
        "baseline": "pymtml NVML-compatible helpers, handles opened per call",
        "baseline_sample_us": round(naive_us, 1),
        "ratio_baseline_over_musad": round(naive_us / ours_us, 2),
        "cpu_sample_us": round(cpu_us, 1),
        "core_percent_at_10hz": round(ours_us * 10 / 1e6 * 100, 3),
    }


def main(argv: list[str]) -> int:
    rounds = 200 if "--quick" in argv else 2000
    if "--child" in argv:
        print(json.dumps(child(rounds)))
        return 0
    from vendor_stubs import build_stub, stub_env

    with tempfile.TemporaryDirectory(prefix="bench-devices-") as tmp:
        folder = build_stub("mtml", pathlib.Path(tmp))
        if folder is None:
            print(json.dumps({"bench": "devices", "skipped": "gcc is not installed (needed for the stub libmtml.so)"}))
            return 0
        proc = subprocess.run([sys.executable, __file__, "--child", *argv], env=stub_env(folder),
                              capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    print(proc.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main(sys.argv[1:]))
