"""Hardware access: one Accelerator protocol, MUSA, CUDA and CPU back ends, detect().

    from musaops.daemon.devices import detect
    acc = detect("auto")          # MUSA, else CUDA, else CPU; never imports torch
    acc.info()                    # list[DeviceInfo], static
    acc.sample()                  # list[DeviceSample], one batched read of every device
    acc.memory_free_bytes(0)      # for the engine's KV-cache budget
    torch = acc.load_torch()      # engine only: torch (+ torch_musa) ready for acc.torch_device_type
    acc.close()
"""

from .base import (
    BACKENDS,
    SAMPLE_FIELDS,
    Accelerator,
    BackendName,
    BackendUnavailableError,
    DeviceError,
    DeviceInfo,
    DeviceSample,
    SampleField,
    UnknownDeviceError,
)
from .detect import PREFERENCES, detect, open_backend

__all__ = [
    "BACKENDS",
    "SAMPLE_FIELDS",
    "PREFERENCES",
    "Accelerator",
    "BackendName",
    "BackendUnavailableError",
    "DeviceError",
    "DeviceInfo",
    "DeviceSample",
    "SampleField",
    "UnknownDeviceError",
    "detect",
    "open_backend",
]
