from musaops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamRequest(_message.Message):
    __slots__ = ("interval_ms", "backfill_seconds")
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    backfill_seconds: int
    def __init__(self, interval_ms: _Optional[int] = ..., backfill_seconds: _Optional[int] = ...) -> None: ...

class HostSample(_message.Message):
    __slots__ = ("cpu_percent", "memory_used_bytes", "memory_total_bytes", "load_average_1m")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVERAGE_1M_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    load_average_1m: float
    def __init__(self, cpu_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., load_average_1m: _Optional[float] = ...) -> None: ...

class ModelStats(_message.Message):
    __slots__ = ("model", "running", "waiting", "kv_cache_usage", "generation_tokens_per_second", "prompt_tokens_per_second", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p95_ms", "itl_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "requests_total", "requests_failed", "prompt_tokens_total", "generation_tokens_total", "preemptions_total", "prefix_cache_hit_tokens_total")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P99_MS_FIELD_NUMBER: _ClassVar[int]
    ITL_P50_MS_FIELD_NUMBER: _ClassVar[int]
    ITL_P95_MS_FIELD_NUMBER: _ClassVar[int]
    ITL_P99_MS_FIELD_NUMBER: _ClassVar[int]
    E2E_P50_MS_FIELD_NUMBER: _ClassVar[int]
    E2E_P99_MS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PREFIX_CACHE_HIT_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    model: str
    running: int
    waiting: int
    kv_cache_usage: float
    generation_tokens_per_second: float
    prompt_tokens_per_second: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p95_ms: float
    itl_p99_ms: float
    e2e_p50_ms: float
    e2e_p99_ms: float
    requests_total: int
    requests_failed: int
    prompt_tokens_total: int
    generation_tokens_total: int
    preemptions_total: int
    prefix_cache_hit_tokens_total: int
    def __init__(self, model: _Optional[str] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ..., kv_cache_usage: _Optional[float] = ..., generation_tokens_per_second: _Optional[float] = ..., prompt_tokens_per_second: _Optional[float] = ..., ttft_p50_ms: _Optional[float] = ..., ttft_p95_ms: _Optional[float] = ..., ttft_p99_ms: _Optional[float] = ..., itl_p50_ms: _Optional[float] = ..., itl_p95_ms: _Optional[float] = ..., itl_p99_ms: _Optional[float] = ..., e2e_p50_ms: _Optional[float] = ..., e2e_p99_ms: _Optional[float] = ..., requests_total: _Optional[int] = ..., requests_failed: _Optional[int] = ..., prompt_tokens_total: _Optional[int] = ..., generation_tokens_total: _Optional[int] = ..., preemptions_total: _Optional[int] = ..., prefix_cache_hit_tokens_total: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("time_unix_ms", "backfill", "host", "devices", "models")
    TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    time_unix_ms: int
    backfill: bool
    host: HostSample
    devices: _containers.RepeatedCompositeFieldContainer[_common_pb2.DeviceSample]
    models: _containers.RepeatedCompositeFieldContainer[ModelStats]
    def __init__(self, time_unix_ms: _Optional[int] = ..., backfill: _Optional[bool] = ..., host: _Optional[_Union[HostSample, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[_common_pb2.DeviceSample, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelStats, _Mapping]]] = ...) -> None: ...
