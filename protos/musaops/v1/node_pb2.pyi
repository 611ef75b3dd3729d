from musaops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeployStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOY_STAGE_UNSPECIFIED: _ClassVar[DeployStage]
    DEPLOY_STAGE_VALIDATING: _ClassVar[DeployStage]
    DEPLOY_STAGE_LOADING_WEIGHTS: _ClassVar[DeployStage]
    DEPLOY_STAGE_ALLOCATING_KV_CACHE: _ClassVar[DeployStage]
    DEPLOY_STAGE_WARMING_UP: _ClassVar[DeployStage]
    DEPLOY_STAGE_READY: _ClassVar[DeployStage]
    DEPLOY_STAGE_FAILED: _ClassVar[DeployStage]

class UndeployMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNDEPLOY_MODE_UNSPECIFIED: _ClassVar[UndeployMode]
    UNDEPLOY_MODE_DRAIN: _ClassVar[UndeployMode]
    UNDEPLOY_MODE_CANCEL: _ClassVar[UndeployMode]
DEPLOY_STAGE_UNSPECIFIED: DeployStage
DEPLOY_STAGE_VALIDATING: DeployStage
DEPLOY_STAGE_LOADING_WEIGHTS: DeployStage
DEPLOY_STAGE_ALLOCATING_KV_CACHE: DeployStage
DEPLOY_STAGE_WARMING_UP: DeployStage
DEPLOY_STAGE_READY: DeployStage
DEPLOY_STAGE_FAILED: DeployStage
UNDEPLOY_MODE_UNSPECIFIED: UndeployMode
UNDEPLOY_MODE_DRAIN: UndeployMode
UNDEPLOY_MODE_CANCEL: UndeployMode

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EngineLimits(_message.Message):
    __slots__ = ("max_models", "max_queue", "max_tokens", "max_stop_strings", "default_max_batch", "default_kv_cache_fraction")
    MAX_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_STOP_STRINGS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_KV_CACHE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    max_models: int
    max_queue: int
    max_tokens: int
    max_stop_strings: int
    default_max_batch: int
    default_kv_cache_fraction: float
    def __init__(self, max_models: _Optional[int] = ..., max_queue: _Optional[int] = ..., max_tokens: _Optional[int] = ..., max_stop_strings: _Optional[int] = ..., default_max_batch: _Optional[int] = ..., default_kv_cache_fraction: _Optional[float] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("hostname", "version", "api_version", "backend", "devices", "limits", "torch_version", "python_version", "started_unix_ms", "host_memory_total_bytes", "host_cpu_count", "tls", "auth_required", "auto_dtype", "engines", "http_address")
    class AutoDtypeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TORCH_VERSION_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HOST_MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    HOST_CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    AUTO_DTYPE_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    version: str
    api_version: str
    backend: _common_pb2.Backend
    devices: _containers.RepeatedCompositeFieldContainer[_common_pb2.DeviceInfo]
    limits: EngineLimits
    torch_version: str
    python_version: str
    started_unix_ms: int
    host_memory_total_bytes: int
    host_cpu_count: int
    tls: bool
    auth_required: bool
    auto_dtype: _containers.ScalarMap[str, str]
    engines: _containers.RepeatedCompositeFieldContainer[EngineAvailability]
    http_address: str
    def __init__(self, hostname: _Optional[str] = ..., version: _Optional[str] = ..., api_version: _Optional[str] = ..., backend: _Optional[_Union[_common_pb2.Backend, str]] = ..., devices: _Optional[_Iterable[_Union[_common_pb2.DeviceInfo, _Mapping]]] = ..., limits: _Optional[_Union[EngineLimits, _Mapping]] = ..., torch_version: _Optional[str] = ..., python_version: _Optional[str] = ..., started_unix_ms: _Optional[int] = ..., host_memory_total_bytes: _Optional[int] = ..., host_cpu_count: _Optional[int] = ..., tls: _Optional[bool] = ..., auth_required: _Optional[bool] = ..., auto_dtype: _Optional[_Mapping[str, str]] = ..., engines: _Optional[_Iterable[_Union[EngineAvailability, _Mapping]]] = ..., http_address: _Optional[str] = ...) -> None: ...

class EngineAvailability(_message.Message):
    __slots__ = ("name", "version", "plugins")
    class PluginsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    plugins: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., plugins: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemoryEstimate(_message.Message):
    __slots__ = ("dtype", "weights_bytes", "kv_bytes_per_token", "total_bytes")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    weights_bytes: int
    kv_bytes_per_token: int
    total_bytes: int
    def __init__(self, dtype: _Optional[str] = ..., weights_bytes: _Optional[int] = ..., kv_bytes_per_token: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class DeploymentInfo(_message.Message):
    __slots__ = ("dtype", "device_indices", "max_batch", "max_context", "weights_bytes", "kv_cache_bytes", "kv_block_size", "kv_blocks_total", "ready_unix_ms", "engine", "tensor_parallel_size", "restarts", "pid", "max_restarts")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INDICES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    KV_BLOCKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    READY_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    TENSOR_PARALLEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    device_indices: _containers.RepeatedScalarFieldContainer[int]
    max_batch: int
    max_context: int
    weights_bytes: int
    kv_cache_bytes: int
    kv_block_size: int
    kv_blocks_total: int
    ready_unix_ms: int
    engine: str
    tensor_parallel_size: int
    restarts: int
    pid: int
    max_restarts: int
    def __init__(self, dtype: _Optional[str] = ..., device_indices: _Optional[_Iterable[int]] = ..., max_batch: _Optional[int] = ..., max_context: _Optional[int] = ..., weights_bytes: _Optional[int] = ..., kv_cache_bytes: _Optional[int] = ..., kv_block_size: _Optional[int] = ..., kv_blocks_total: _Optional[int] = ..., ready_unix_ms: _Optional[int] = ..., engine: _Optional[str] = ..., tensor_parallel_size: _Optional[int] = ..., restarts: _Optional[int] = ..., pid: _Optional[int] = ..., max_restarts: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "architecture", "parameters", "size_bytes", "memory_estimates", "state", "reason", "max_position_embeddings", "torch_dtype", "deployment", "num_layers", "hidden_size", "vocab_size", "quantization", "notice")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MAX_POSITION_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    TORCH_DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    architecture: str
    parameters: int
    size_bytes: int
    memory_estimates: _containers.RepeatedCompositeFieldContainer[MemoryEstimate]
    state: _common_pb2.ModelState
    reason: str
    max_position_embeddings: int
    torch_dtype: str
    deployment: DeploymentInfo
    num_layers: int
    hidden_size: int
    vocab_size: int
    quantization: str
    notice: str
    def __init__(self, name: _Optional[str] = ..., architecture: _Optional[str] = ..., parameters: _Optional[int] = ..., size_bytes: _Optional[int] = ..., memory_estimates: _Optional[_Iterable[_Union[MemoryEstimate, _Mapping]]] = ..., state: _Optional[_Union[_common_pb2.ModelState, str]] = ..., reason: _Optional[str] = ..., max_position_embeddings: _Optional[int] = ..., torch_dtype: _Optional[str] = ..., deployment: _Optional[_Union[DeploymentInfo, _Mapping]] = ..., num_layers: _Optional[int] = ..., hidden_size: _Optional[int] = ..., vocab_size: _Optional[int] = ..., quantization: _Optional[str] = ..., notice: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "repository", "free_bytes")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    repository: str
    free_bytes: int
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., repository: _Optional[str] = ..., free_bytes: _Optional[int] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("model", "dtype", "device_indices", "max_batch", "max_context", "kv_cache_fraction", "force", "engine", "tensor_parallel_size", "engine_options", "max_restarts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INDICES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    TENSOR_PARALLEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    dtype: str
    device_indices: _containers.RepeatedScalarFieldContainer[int]
    max_batch: int
    max_context: int
    kv_cache_fraction: float
    force: bool
    engine: str
    tensor_parallel_size: int
    engine_options: EngineOptions
    max_restarts: int
    def __init__(self, model: _Optional[str] = ..., dtype: _Optional[str] = ..., device_indices: _Optional[_Iterable[int]] = ..., max_batch: _Optional[int] = ..., max_context: _Optional[int] = ..., kv_cache_fraction: _Optional[float] = ..., force: _Optional[bool] = ..., engine: _Optional[str] = ..., tensor_parallel_size: _Optional[int] = ..., engine_options: _Optional[_Union[EngineOptions, _Mapping]] = ..., max_restarts: _Optional[int] = ...) -> None: ...

class EngineOptions(_message.Message):
    __slots__ = ("max_num_batched_tokens", "enable_prefix_caching", "quantization", "gpu_memory_utilization")
    MAX_NUM_BATCHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_PREFIX_CACHING_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    max_num_batched_tokens: int
    enable_prefix_caching: bool
    quantization: str
    gpu_memory_utilization: float
    def __init__(self, max_num_batched_tokens: _Optional[int] = ..., enable_prefix_caching: _Optional[bool] = ..., quantization: _Optional[str] = ..., gpu_memory_utilization: _Optional[float] = ...) -> None: ...

class DeployProgress(_message.Message):
    __slots__ = ("stage", "fraction", "done_bytes", "total_bytes", "message", "model", "elapsed_seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    DONE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: DeployStage
    fraction: float
    done_bytes: int
    total_bytes: int
    message: str
    model: ModelInfo
    elapsed_seconds: float
    def __init__(self, stage: _Optional[_Union[DeployStage, str]] = ..., fraction: _Optional[float] = ..., done_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., message: _Optional[str] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class UndeployRequest(_message.Message):
    __slots__ = ("model", "mode", "drain_timeout_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DRAIN_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    mode: UndeployMode
    drain_timeout_ms: int
    def __init__(self, model: _Optional[str] = ..., mode: _Optional[_Union[UndeployMode, str]] = ..., drain_timeout_ms: _Optional[int] = ...) -> None: ...

class UndeployResponse(_message.Message):
    __slots__ = ("freed_bytes", "cancelled_requests", "drained_requests")
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    DRAINED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    freed_bytes: int
    cancelled_requests: int
    drained_requests: int
    def __init__(self, freed_bytes: _Optional[int] = ..., cancelled_requests: _Optional[int] = ..., drained_requests: _Optional[int] = ...) -> None: ...
