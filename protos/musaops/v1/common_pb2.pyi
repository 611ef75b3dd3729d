from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Backend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_UNSPECIFIED: _ClassVar[Backend]
    BACKEND_MUSA: _ClassVar[Backend]
    BACKEND_CUDA: _ClassVar[Backend]
    BACKEND_CPU: _ClassVar[Backend]

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_AVAILABLE: _ClassVar[ModelState]
    MODEL_STATE_ERROR: _ClassVar[ModelState]
    MODEL_STATE_PENDING: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_READY: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]
    MODEL_STATE_UNLOADING: _ClassVar[ModelState]
BACKEND_UNSPECIFIED: Backend
BACKEND_MUSA: Backend
BACKEND_CUDA: Backend
BACKEND_CPU: Backend
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_AVAILABLE: ModelState
MODEL_STATE_ERROR: ModelState
MODEL_STATE_PENDING: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_READY: ModelState
MODEL_STATE_FAILED: ModelState
MODEL_STATE_UNLOADING: ModelState

class DeviceInfo(_message.Message):
    __slots__ = ("index", "name", "uuid", "backend", "memory_total_bytes", "capability", "driver_version", "pci_bus_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    uuid: str
    backend: Backend
    memory_total_bytes: int
    capability: str
    driver_version: str
    pci_bus_id: str
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., uuid: _Optional[str] = ..., backend: _Optional[_Union[Backend, str]] = ..., memory_total_bytes: _Optional[int] = ..., capability: _Optional[str] = ..., driver_version: _Optional[str] = ..., pci_bus_id: _Optional[str] = ...) -> None: ...

class DeviceSample(_message.Message):
    __slots__ = ("index", "memory_used_bytes", "memory_total_bytes", "utilization_percent", "memory_utilization_percent", "temperature_celsius", "power_watts", "power_limit_watts", "sm_clock_mhz", "memory_clock_mhz", "fan_speed_percent", "pcie_generation", "pcie_width", "ecc_enabled", "ecc_errors_uncorrected", "links_up", "links_total", "mpc_enabled", "healthy", "health_reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_WATTS_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    FAN_SPEED_PERCENT_FIELD_NUMBER: _ClassVar[int]
    PCIE_GENERATION_FIELD_NUMBER: _ClassVar[int]
    PCIE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    ECC_ENABLED_FIELD_NUMBER: _ClassVar[int]
    ECC_ERRORS_UNCORRECTED_FIELD_NUMBER: _ClassVar[int]
    LINKS_UP_FIELD_NUMBER: _ClassVar[int]
    LINKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MPC_ENABLED_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_percent: float
    memory_utilization_percent: float
    temperature_celsius: float
    power_watts: float
    power_limit_watts: float
    sm_clock_mhz: int
    memory_clock_mhz: int
    fan_speed_percent: float
    pcie_generation: int
    pcie_width: int
    ecc_enabled: bool
    ecc_errors_uncorrected: int
    links_up: int
    links_total: int
    mpc_enabled: bool
    healthy: bool
    health_reason: str
    def __init__(self, index: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., utilization_percent: _Optional[float] = ..., memory_utilization_percent: _Optional[float] = ..., temperature_celsius: _Optional[float] = ..., power_watts: _Optional[float] = ..., power_limit_watts: _Optional[float] = ..., sm_clock_mhz: _Optional[int] = ..., memory_clock_mhz: _Optional[int] = ..., fan_speed_percent: _Optional[float] = ..., pcie_generation: _Optional[int] = ..., pcie_width: _Optional[int] = ..., ecc_enabled: _Optional[bool] = ..., ecc_errors_uncorrected: _Optional[int] = ..., links_up: _Optional[int] = ..., links_total: _Optional[int] = ..., mpc_enabled: _Optional[bool] = ..., healthy: _Optional[bool] = ..., health_reason: _Optional[str] = ...) -> None: ...
