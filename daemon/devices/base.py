"""The one shape every accelerator back end has: static facts, batched samples, free memory.

The daemon (telemetry, metrics, Node.GetInfo) and the engine (KV-cache budget, torch device)
see devices only through `Accelerator`. Back ends (musa.py, cuda.py, cpu.py) read their
vendor library once per `sample()` call and hand back frozen dataclasses that are safe to
pass across threads. A field a vendor does not report is None (or "" for strings in
`DeviceInfo`), never a made-up number. The fields match protos/musaops/v1/common.proto.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import ModuleType
from typing import Any, Literal, Protocol, runtime_checkable

BackendName = Literal["musa", "cuda", "cpu"]
BACKENDS: tuple[BackendName, ...] = ("musa", "cuda", "cpu")


class DeviceError(Exception):
    """Base class for device errors; the message is a sentence fit for an operator."""


class BackendUnavailableError(DeviceError):
    """The requested backend is not present on this machine (the message says why)."""


class UnknownDeviceError(DeviceError, IndexError):
    """A device index outside 0..count-1 (maps to INVALID_ARGUMENT / NOT_FOUND)."""


@dataclass(frozen=True)
class DeviceInfo:
    """Static facts about one device (common.proto DeviceInfo)."""

    index: int                 # position in this node's device list, 0-based
    name: str                  # marketing name, e.g. "MTT S5000"
    uuid: str                  # vendor UUID; "" when the backend has none
    backend: BackendName
    memory_total_bytes: int    # device memory (host RAM for CPU)
    capability: str = ""       # compute capability, e.g. "9.0"; "" when unknown
    driver_version: str = ""   # "" when unknown
    pci_bus_id: str = ""       # e.g. "0000:3b:00.0"; "" when unknown


def reading(unit: str, help: str, *, metric: bool = True) -> Any:
    """One row of the device field table: a DeviceSample field that defaults to None (not
    reported), with its unit and its Prometheus help; `metric=False` keeps it off /metrics
    (text). The field's name is also its protobuf field (common.proto DeviceSample) and,
    prefixed with `musad:device_`, its gauge."""
    return field(default=None, metadata={"unit": unit, "help": help, "metric": metric})


@dataclass(frozen=True)
class DeviceSample:
    """One reading of one device (common.proto DeviceSample); None = not reported.

    This class is the device field table (nvitop-style): the telemetry encoder
    (services/telemetry_encode.py) and the /metrics gauges (metrics.py) iterate
    SAMPLE_FIELDS, built from it below. A new field is one line here plus its reader(s)
    and its line in common.proto. `healthy` and `health_reason` are derived, not read.
    """

    index: int
    memory_used_bytes: int | None = reading("bytes", "Device memory in use, bytes.")
    memory_total_bytes: int | None = reading("bytes", "Device memory, bytes.")
    utilization_percent: float | None = reading("%", "Compute busy, percent.")
    memory_utilization_percent: float | None = reading("%", "Memory controller busy, percent.")
    temperature_celsius: float | None = reading("°C", "Core temperature, degrees Celsius.")
    power_watts: float | None = reading("W", "Board power draw, watts.")
    power_limit_watts: float | None = reading("W", "Enforced power limit, watts.")
    sm_clock_mhz: int | None = reading("MHz", "Graphics/SM clock, MHz.")
    memory_clock_mhz: int | None = reading("MHz", "Memory clock, MHz.")
    fan_speed_percent: float | None = reading("%", "Fan speed, percent of maximum (mean over the fans).")
    pcie_generation: int | None = reading("", "PCIe link generation in use.")
    pcie_width: int | None = reading("lanes", "PCIe link width in use, lanes.")
    ecc_enabled: bool | None = reading("", "ECC on device memory: 1 on, 0 off.")
    ecc_errors_uncorrected: int | None = reading("", "Uncorrected ECC errors since the driver loaded.")
    links_up: int | None = reading("", "MTLink / NVLink links up.")
    links_total: int | None = reading("", "MTLink / NVLink links the device has.")
    mpc_enabled: bool | None = reading("", "MUSA MPC partitioning: 1 on, 0 off.")
    # Derived, not read: `health` below decides them from the fields above.
    healthy: bool | None = field(init=False, default=None, metadata={
        "unit": "", "help": "1 when the device passes the health rule (no uncorrected ECC errors), else 0.",
        "metric": True})
    health_reason: str | None = field(init=False, default=None, metadata={
        "unit": "", "help": "Why the device is unhealthy.", "metric": False})

    def __post_init__(self) -> None:
        healthy, reason = health(self)
        object.__setattr__(self, "healthy", healthy)
        object.__setattr__(self, "health_reason", reason)


def health(sample: DeviceSample) -> tuple[bool, str | None]:
    """The health rule, in one place: a device is unhealthy when it reports uncorrected ECC
    errors since the driver loaded (the rule GPUStack applies to MTT GPUs). Returns
    (healthy, the reason as a phrase, or None)."""
    errors = sample.ecc_errors_uncorrected
    if errors:
        return False, f"{errors} uncorrected ECC error{'s' if errors != 1 else ''} since the driver loaded"
    return True, None


@dataclass(frozen=True)
class SampleField:
    """A row of the device field table as the encoder and /metrics see it."""

    name: str              # dataclass attribute = common.proto DeviceSample field
    unit: str
    help: str
    metric: str | None     # Prometheus name without the `musad:` prefix; None = not exported


SAMPLE_FIELDS: tuple[SampleField, ...] = tuple(
    SampleField(f.name, f.metadata["unit"], f.metadata["help"],
                f"device_{f.name}" if f.metadata["metric"] else None)
    for f in fields(DeviceSample) if f.name != "index"
)


@runtime_checkable
class Accelerator(Protocol):
    """One backend's devices on this node. Methods are thread-safe."""

    @property
    def backend(self) -> BackendName:
        """"musa", "cuda" or "cpu"."""
        ...

    @property
    def torch_device_type(self) -> str:
        """The torch device type to put tensors on: "musa", "cuda" or "cpu"."""
        ...

    def info(self) -> list[DeviceInfo]:
        """Static facts, one per device, in index order (cached: cheap to call)."""
        ...

    def sample(self) -> list[DeviceSample]:
        """Read every device's changing fields once; one entry per device, index order."""
        ...

    def memory_free_bytes(self, index: int = 0) -> int:
        """Free device memory of device `index` (available RAM on CPU), bytes.

        Raises UnknownDeviceError for an index outside the device list.
        """
        ...

    def load_torch(self) -> ModuleType:
        """Import torch (and the vendor plug-in, e.g. torch_musa) and check that torch sees
        this backend's devices; returns the torch module. Raises BackendUnavailableError with
        a sentence when torch cannot use them. Costs seconds the first time: call it from
        the engine's loader, never from detection or sampling."""
        ...

    def close(self) -> None:
        """Release the vendor library. Idempotent."""
        ...


def check_index(index: int, count: int, backend: str) -> None:
    """Raise UnknownDeviceError with a sentence unless 0 <= index < count."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise UnknownDeviceError(
            f"There is no {backend} device with index {index!r}: this node has {count} "
            f"(valid indices 0..{count - 1})." if count else
            f"There is no {backend} device with index {index!r}: this node has none."
        )


def visible_indices(physical: list[str], env: str | None) -> list[int]:
    """Apply a CUDA_VISIBLE_DEVICES / MUSA_VISIBLE_DEVICES value to the physical GPUs
    (given by UUID, in the management library's order); returns the kept physical indices.

    Like the CUDA runtime: a comma-separated list of indices or UUID prefixes
    ("GPU-8f3a..."); parsing stops at the first entry that names no GPU; unset = all.
    """
    if env is None:
        return list(range(len(physical)))
    chosen: list[int] = []
    for entry in (e.strip() for e in env.split(",")):
        if not entry:
            break
        if entry.lstrip("-").isdigit():
            idx = int(entry)
            if not 0 <= idx < len(physical):
                break
        else:
            matches = [i for i, u in enumerate(physical) if u.startswith(entry)]
            if len(matches) != 1:
                break
            idx = matches[0]
        if idx in chosen:
            break
        chosen.append(idx)
    return chosen


def pct(value: float | int | None) -> float | None:
    """A vendor percentage as float, clamped to 0..100; None stays None."""
    if value is None:
        return None
    return float(min(100.0, max(0.0, float(value))))
