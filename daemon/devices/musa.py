"""Moore Threads GPUs: telemetry through MTML (pymtml), tensors through torch_musa.

pymtml (PyPI mthreads-ml-py) loads libmtml.so(.2) with dlopen on mtmlLibraryInit and raises
OSError when it is missing: that means "no MUSA here". Device, GPU and memory handles are
opened once and kept until close(), so a sample is only the value reads. torch and
torch_musa are imported only by load_torch(), never by detection or sampling.
"""

from __future__ import annotations

import dataclasses
import logging
import os
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


def _load_pymtml() -> Any:
    try:
        import pymtml
    except ImportError as exc:
        raise BackendUnavailableError(
            "MUSA is not available: the Python package mthreads-ml-py (pymtml) is not "
            f"installed ({exc})."
        ) from exc
    return pymtml


class _Device:
    """The MTML handles of one device, opened once."""

    __slots__ = ("device", "gpu", "memory")

    def __init__(self, device: Any, gpu: Any, memory: Any) -> None:
        self.device, self.gpu, self.memory = device, gpu, memory


class MusaAccelerator:
    """The MUSA devices MTML reports, in MTML index order, filtered by MUSA_VISIBLE_DEVICES."""

    def __init__(self) -> None:
        m = _load_pymtml()
        self._m = m
        self._lock = threading.Lock()
        self._closed = False
        try:
            m.mtmlLibraryInit()
        except OSError as exc:
            raise BackendUnavailableError(
                "MUSA is not available: the MTML library libmtml.so could not be loaded "
                f"({' '.join(str(exc).split())})."
            ) from exc
        except m.MTMLError as exc:
            raise BackendUnavailableError(
                f"MUSA is not available: MTML failed to initialise ({exc}); is the MUSA driver loaded?"
            ) from exc
        try:
            count = m.mtmlLibraryCountDevice()
            if count < 1:
                raise BackendUnavailableError("MUSA is not available: MTML reports no devices.")
            handles = [m.mtmlLibraryInitDeviceByIndex(i) for i in range(count)]
            uuids = [str(m.mtmlDeviceGetUUID(h)) for h in handles]
            # MTML lists every board; torch_musa numbers the ones MUSA_VISIBLE_DEVICES shows.
            keep = visible_indices(uuids, os.environ.get("MUSA_VISIBLE_DEVICES"))
            if not keep:
                raise BackendUnavailableError(
                    "MUSA is not available: MUSA_VISIBLE_DEVICES="
                    f"{os.environ.get('MUSA_VISIBLE_DEVICES')!r} hides all {count} devices."
                )
            self._devices = [self._open(handles[i]) for i in keep]
            self._info = self._read_info()
        except m.MTMLError as exc:
            self._shutdown()
            raise BackendUnavailableError(f"MUSA is not available: MTML failed ({exc}).") from exc
        except BaseException:
            self._shutdown()
            raise
        self._reader = FieldReader(
            m.MTMLError,
            lambda e: getattr(e, "value", None)
            in (m.MTML_ERROR_NOT_SUPPORTED, m.MTML_ERROR_FUNCTION_NOT_FOUND),
        )

    # -- set-up ---------------------------------------------------------------------------
    def _open(self, device: Any) -> _Device:
        m = self._m
        return _Device(device, m.mtmlDeviceInitGpu(device), m.mtmlDeviceInitMemory(device))

    def _driver_version(self) -> str:
        m = self._m
        try:
            system = m.mtmlLibraryInitSystem()
        except m.MTMLError:
            return ""
        try:
            return str(m.mtmlSystemGetDriverVersion(system))
        except m.MTMLError:
            return ""
        finally:
            try:
                m.mtmlLibraryFreeSystem(system)
            except m.MTMLError:
                pass

    def _read_info(self) -> list[DeviceInfo]:
        m = self._m
        driver = self._driver_version()
        infos = []
        for i, d in enumerate(self._devices):
            def opt(fn: Any, *args: Any) -> Any:
                try:
                    return fn(*args)
                except m.MTMLError:
                    return None

            pci = opt(m.mtmlDeviceGetPciInfo, d.device)
            infos.append(
                DeviceInfo(
                    index=i,
                    name=str(opt(m.mtmlDeviceGetName, d.device) or "Moore Threads GPU"),
                    uuid=str(opt(m.mtmlDeviceGetUUID, d.device) or ""),
                    backend="musa",
                    memory_total_bytes=int(m.mtmlMemoryGetTotal(d.memory)),
                    capability="",  # MTML has none; filled from torch_musa by load_torch()
                    driver_version=driver,
                    pci_bus_id=str(pci.sbdf) if pci is not None else "",
                )
            )
        return infos

    # -- Accelerator ----------------------------------------------------------------------
    @property
    def backend(self) -> BackendName:
        return "musa"

    @property
    def torch_device_type(self) -> str:
        return "musa"

    def info(self) -> list[DeviceInfo]:
        return list(self._info)

    def sample(self) -> list[DeviceSample]:
        m, r = self._m, self._reader
        out = []
        with self._lock:
            if self._closed:
                return []
            for i, d in enumerate(self._devices):
                power_mw = r.read(i, "power", m.mtmlDeviceGetPowerUsage, d.device)
                out.append(
                    DeviceSample(
                        index=i,
                        memory_used_bytes=r.read(i, "mem_used", m.mtmlMemoryGetUsed, d.memory),
                        memory_total_bytes=self._info[i].memory_total_bytes,
                        utilization_percent=pct(r.read(i, "util", m.mtmlGpuGetUtilization, d.gpu)),
                        memory_utilization_percent=pct(
                            r.read(i, "mem_util", m.mtmlMemoryGetUtilization, d.memory)
                        ),
                        temperature_celsius=_float(r.read(i, "temp", m.mtmlGpuGetTemperature, d.gpu)),
                        power_watts=power_mw / 1000.0 if power_mw is not None else None,  # MTML: mW
                        power_limit_watts=None,  # MTML has no power-limit query
                        sm_clock_mhz=r.read(i, "sm_clock", m.mtmlGpuGetClock, d.gpu),
                        memory_clock_mhz=r.read(i, "mem_clock", m.mtmlMemoryGetClock, d.memory),
                        **self._health(i, d),
                    )
                )
        return out

    def _health(self, i: int, d: _Device) -> dict[str, Any]:
        """Fans, PCIe link, ECC, MTLink and MPC of device i (lock held); None = not reported."""
        m, r = self._m, self._reader
        fans = r.read(i, "fan_count", m.mtmlDeviceCountFan, d.device) or 0
        speeds = [r.read(i, f"fan{f}", m.mtmlDeviceGetFanSpeed, d.device, f) for f in range(fans)]
        speeds = [s for s in speeds if s is not None]
        pci = r.read(i, "pci", m.mtmlDeviceGetPciInfo, d.device)  # current gen/width change with link power state
        ecc = r.read(i, "ecc_mode", m.mtmlMemoryGetEccMode, d.memory)
        links_total = r.read(i, "mtlink_spec", m.mtmlDeviceGetMtLinkSpec, d.device)
        links_total = int(links_total.linkNum) if links_total is not None else None
        links_up = None
        if links_total:
            states = [r.read(i, f"mtlink{k}", m.mtmlDeviceGetMtLinkState, d.device, k) for k in range(links_total)]
            links_up = sum(s == m.MTML_MTLINK_STATE_UP for s in states)
        mpc = r.read(i, "mpc_mode", m.mtmlDeviceGetMpcMode, d.device)
        return dict(
            fan_speed_percent=pct(sum(speeds) / len(speeds)) if speeds else None,
            pcie_generation=int(pci.pciCurGen) or None if pci is not None else None,
            pcie_width=int(pci.pciCurWidth) or None if pci is not None else None,
            ecc_enabled=ecc[0] == m.MTML_MEMORY_ECC_ENABLE if ecc is not None else None,
            ecc_errors_uncorrected=r.read(
                i, "ecc_uncorrected", m.mtmlMemoryGetEccErrorCounter, d.memory,
                m.MTML_MEMORY_ERROR_TYPE_UNCORRECTED, m.MTML_VOLATILE_ECC, m.MTML_MEMORY_LOCATION_DRAM),
            links_up=links_up,
            links_total=links_total,
            mpc_enabled=mpc == m.MTML_DEVICE_MPC_ENABLE if mpc is not None else None,
        )

    def memory_free_bytes(self, index: int = 0) -> int:
        check_index(index, len(self._info), "musa")
        m = self._m
        with self._lock:
            if self._closed:
                raise DeviceError("The MUSA devices were closed; memory cannot be read.")
            used = m.mtmlMemoryGetUsed(self._devices[index].memory)
        return max(0, self._info[index].memory_total_bytes - int(used))

    def load_torch(self) -> ModuleType:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(f"MUSA needs torch, which is not installed ({exc}).") from exc
        if not hasattr(torch, "musa"):
            try:
                import torch_musa  # noqa: F401  (registers the "musa" device with torch)
            except ImportError as exc:
                raise BackendUnavailableError(
                    "MTML sees MUSA GPUs but torch_musa is not installed, so torch cannot use "
                    f"them ({exc}). Install the torch_musa wheel that matches torch {torch.__version__}."
                ) from exc
        musa = getattr(torch, "musa", None)
        if musa is None or not musa.is_available() or musa.device_count() < 1:
            raise BackendUnavailableError(
                "torch_musa is installed but reports no usable MUSA device "
                f"(MUSA_VISIBLE_DEVICES={os.environ.get('MUSA_VISIBLE_DEVICES', '<unset>')})."
            )
        self._fill_capability(musa)
        return torch

    def _fill_capability(self, musa: Any) -> None:
        infos = []
        for info in self._info:
            cap = info.capability
            if not cap and info.index < musa.device_count():
                try:
                    major, minor = musa.get_device_capability(info.index)
                    cap = f"{major}.{minor}"
                except Exception:  # torch_musa versions differ; capability is optional
                    cap = ""
            infos.append(_replace(info, capability=cap))
        self._info = infos

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            m = self._m
            for d in self._devices:
                for free, handle in ((m.mtmlDeviceFreeGpu, d.gpu), (m.mtmlDeviceFreeMemory, d.memory)):
                    try:
                        free(handle)
                    except m.MTMLError:
                        pass
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._m.mtmlLibraryShutDown()
        except self._m.MTMLError as exc:
            log.debug("mtmlLibraryShutDown failed: %s", exc)


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _replace(info: DeviceInfo, **changes: Any) -> DeviceInfo:
    return dataclasses.replace(info, **changes)

