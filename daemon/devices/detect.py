"""Pick the accelerator this node runs on: an explicit choice, else MUSA, CUDA, CPU.

Probing loads only the vendor management libraries (MTML, NVML) and psutil, never torch,
so `musad serve` and its telemetry start in milliseconds. An explicit choice that is not
present fails with the reason; "auto" logs why each skipped backend was skipped.
"""

from __future__ import annotations

import logging

from .base import BACKENDS, Accelerator, BackendUnavailableError, DeviceError

log = logging.getLogger(__name__)

PREFERENCES = ("auto", *BACKENDS)


def open_backend(name: str) -> Accelerator:
    """Open one named backend; raises BackendUnavailableError with the reason."""
    if name == "musa":
        from .musa import MusaAccelerator

        return MusaAccelerator()
    if name == "cuda":
        from .cuda import CudaAccelerator

        return CudaAccelerator()
    if name == "cpu":
        from .cpu import CpuAccelerator

        return CpuAccelerator()
    raise DeviceError(f"Unknown device backend {name!r}: choose one of {', '.join(PREFERENCES)}.")


def detect(preference: str = "auto") -> Accelerator:
    """The accelerator to use. `preference` is "auto", "musa", "cuda" or "cpu".

    An explicit backend that is absent raises BackendUnavailableError; "auto" tries MUSA,
    then CUDA, and falls back to the CPU (which is always present).
    """
    choice = (preference or "auto").strip().lower()
    if choice not in PREFERENCES:
        raise DeviceError(
            f"Unknown device {preference!r}: choose one of {', '.join(PREFERENCES)}."
        )
    if choice != "auto":
        return open_backend(choice)
    for name in ("musa", "cuda"):
        try:
            acc = open_backend(name)
        except BackendUnavailableError as exc:
            log.info("device detection: %s", exc)
            continue
        log.info("device detection: using %s (%d devices)", name, len(acc.info()))
        return acc
    log.info("device detection: no GPU found, running on the CPU")
    return open_backend("cpu")
