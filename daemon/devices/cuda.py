"""NVIDIA GPUs: telemetry through NVML (nvidia-ml-py's pynvml), tensors through torch.cuda.

NVML numbers GPUs in PCI bus order and ignores CUDA_VISIBLE_DEVICES; torch numbers the
visible ones. So this back end applies CUDA_VISIBLE_DEVICES itself (indices or UUID
prefixes) and asks torch for PCI bus order, which makes index i here the same GPU as
torch's cuda:i. torch is imported only by load_torch().
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import ModuleType
from typing import Any

from ._fields import FieldReader
from .base import (
    BackendName,
    BackendUnavailableError,
    DeviceError,
    DeviceInfo,
    DeviceSample,
    check_index,
    pct,
    visible_indices,
)

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _prefer_pci_bus_order() -> None:
    """Make torch number GPUs as NVML does (PCI bus order, not CUDA's fastest-first), so
    telemetry's device i is the engine's cuda:i. Effective only before CUDA initialises,
    hence done at detection, which runs before anything imports torch."""
    if "torch" not in sys.modules:
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def _load_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:
        raise BackendUnavailableError(
            f"CUDA is not available: the Python package nvidia-ml-py (pynvml) is not installed ({exc})."
        ) from exc
    return pynvml


class CudaAccelerator:
    """The NVIDIA GPUs NVML reports, filtered by CUDA_VISIBLE_DEVICES."""

    def __init__(self) -> None:
        n = _load_pynvml()
        self._n = n
        self._lock = threading.Lock()
        self._closed = False
        try:
            n.nvmlInit()
        except n.NVMLError as exc:
            raise BackendUnavailableError(
                f"CUDA is not available: NVML (libnvidia-ml.so.1) could not be initialised ({exc})."
            ) from exc
        try:
            handles = [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]
            uuids = [_text(n.nvmlDeviceGetUUID(h)) for h in handles]
            keep = visible_indices(uuids, os.environ.get("CUDA_VISIBLE_DEVICES"))
            if not keep:
                raise BackendUnavailableError(
                    "CUDA is not available: NVML reports no GPU"
                    + (" visible through CUDA_VISIBLE_DEVICES." if handles else ".")
                )
            self._handles = [handles[i] for i in keep]
            self._info = self._read_info()
            self._nvlinks = [self._count_nvlinks(h) for h in self._handles]
            _prefer_pci_bus_order()
        except n.NVMLError as exc:
            self._shutdown()
            raise BackendUnavailableError(f"CUDA is not available: NVML failed ({exc}).") from exc
        except BaseException:
            self._shutdown()
            raise
        self._reader = FieldReader(
            n.NVMLError,
            lambda e: getattr(e, "value", None)
            in (n.NVML_ERROR_NOT_SUPPORTED, n.NVML_ERROR_FUNCTION_NOT_FOUND),
        )

    def _read_info(self) -> list[DeviceInfo]:
        n = self._n

        def opt(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except n.NVMLError:
                return None

        driver = opt(n.nvmlSystemGetDriverVersion)
        infos = []
        for i, h in enumerate(self._handles):
            cap = opt(n.nvmlDeviceGetCudaComputeCapability, h)
            pci = opt(n.nvmlDeviceGetPciInfo, h)
            infos.append(
                DeviceInfo(
                    index=i,
                    name=_text(opt(n.nvmlDeviceGetName, h) or "NVIDIA GPU"),
                    uuid=_text(opt(n.nvmlDeviceGetUUID, h) or ""),
                    backend="cuda",
                    memory_total_bytes=int(n.nvmlDeviceGetMemoryInfo(h).total),
                    capability=f"{cap[0]}.{cap[1]}" if cap else "",
                    driver_version=_text(driver) if driver else "",
                    pci_bus_id=_text(pci.busId) if pci is not None else "",
                )
            )
        return infos

    @property
    def backend(self) -> BackendName:
        return "cuda"

    @property
    def torch_device_type(self) -> str:
        return "cuda"

    def info(self) -> list[DeviceInfo]:
        return list(self._info)

    def sample(self) -> list[DeviceSample]:
        n, r = self._n, self._reader
        out = []
        with self._lock:
            if self._closed:
                return []
            for i, h in enumerate(self._handles):
                mem = r.read(i, "memory", n.nvmlDeviceGetMemoryInfo, h)
                util = r.read(i, "util", n.nvmlDeviceGetUtilizationRates, h)
                power_mw = r.read(i, "power", n.nvmlDeviceGetPowerUsage, h)
                limit_mw = r.read(i, "power_limit", n.nvmlDeviceGetEnforcedPowerLimit, h)
                temp = r.read(i, "temp", n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU)
                out.append(
                    DeviceSample(
                        index=i,
                        memory_used_bytes=int(mem.used) if mem is not None else None,
                        memory_total_bytes=int(mem.total) if mem is not None else None,
                        utilization_percent=pct(util.gpu) if util is not None else None,
                        memory_utilization_percent=pct(util.memory) if util is not None else None,
                        temperature_celsius=float(temp) if temp is not None else None,
                        power_watts=power_mw / 1000.0 if power_mw is not None else None,  # NVML: mW
                        power_limit_watts=limit_mw / 1000.0 if limit_mw is not None else None,
                        sm_clock_mhz=r.read(i, "sm_clock", n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM),
                        memory_clock_mhz=r.read(i, "mem_clock", n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM),
                        **self._health(i, h),
                    )
                )
        return out

    def _health(self, i: int, h: Any) -> dict[str, Any]:
        """Fan, PCIe link, ECC and NVLink of device i (lock held); None = not reported."""
        n, r = self._n, self._reader
        ecc = r.read(i, "ecc_mode", n.nvmlDeviceGetEccMode, h)
        links = self._nvlinks[i]
        states = [r.read(i, f"nvlink{k}", n.nvmlDeviceGetNvLinkState, h, k) for k in range(links)]
        fan = r.read(i, "fan", n.nvmlDeviceGetFanSpeed, h)
        return dict(
            fan_speed_percent=pct(fan) if fan is not None else None,
            pcie_generation=r.read(i, "pcie_gen", n.nvmlDeviceGetCurrPcieLinkGeneration, h),
            pcie_width=r.read(i, "pcie_width", n.nvmlDeviceGetCurrPcieLinkWidth, h),
            ecc_enabled=ecc[0] == n.NVML_FEATURE_ENABLED if ecc is not None else None,
            ecc_errors_uncorrected=r.read(i, "ecc_uncorrected", n.nvmlDeviceGetTotalEccErrors, h,
                                          n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, n.NVML_VOLATILE_ECC),
            links_up=sum(s == n.NVML_FEATURE_ENABLED for s in states) if links else None,
            links_total=links or None,
        )

    def _count_nvlinks(self, h: Any) -> int:
        """NVLinks the GPU has: the link indices that answer, counted once at start."""
        n = self._n
        count = 0
        for k in range(n.NVML_NVLINK_MAX_LINKS):
            try:
                n.nvmlDeviceGetNvLinkState(h, k)
            except n.NVMLError:
                break
            count += 1
        return count

    def memory_free_bytes(self, index: int = 0) -> int:
        check_index(index, len(self._info), "cuda")
        with self._lock:
            if self._closed:
                raise DeviceError("The CUDA devices were closed; memory cannot be read.")
            return int(self._n.nvmlDeviceGetMemoryInfo(self._handles[index]).free)

    def load_torch(self) -> ModuleType:
        _prefer_pci_bus_order()
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(f"CUDA needs torch, which is not installed ({exc}).") from exc
        if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
            raise BackendUnavailableError(
                f"NVML sees NVIDIA GPUs but this torch build ({torch.__version__}) cannot use "
                "them: install a CUDA build of torch that matches the driver."
            )
        if torch.cuda.device_count() != len(self._info):
            log.warning("NVML reports %d visible GPUs, torch %d", len(self._info), torch.cuda.device_count())
        return torch

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._n.nvmlShutdown()
        except self._n.NVMLError as exc:
            log.debug("nvmlShutdown failed: %s", exc)

