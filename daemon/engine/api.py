"""The engine's torch-free surface: what the rest of the daemon may know about the engine.

The daemon's deployment manager, telemetry, metrics and gRPC servicers import only this
module; torch stays inside daemon/engine (and daemon/devices). Everything here is a plain
frozen dataclass or an exception, safe to hand across threads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Protocol


DTYPES = ("bfloat16", "float16", "float32")


class FinishReason(enum.Enum):
    STOP = "stop"            # EOS or a stop string
    LENGTH = "length"        # max_tokens or the context limit
    CANCELLED = "cancelled"  # client cancelled, or the model was undeployed
    ERROR = "error"          # the engine failed this request


class EngineError(Exception):
    """Base class: a sentence fit to show an operator."""


class InvalidRequestError(EngineError):
    """The request is malformed for this model (maps to INVALID_ARGUMENT)."""


class QueueFullError(EngineError):
    """Too many waiting requests (maps to RESOURCE_EXHAUSTED with retry advice)."""


class EngineClosedError(EngineError):
    """The engine is draining or shut down (maps to FAILED_PRECONDITION)."""


class LoadError(EngineError):
    """Loading failed: bad weights, wrong shapes, out of memory. The message says which."""


@dataclass(frozen=True)
class DeviceTarget:
    """Where to run: torch device type ("musa", "cuda", "cpu") and device indices."""

    backend: str
    indices: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class EngineSpec:
    """What Node.Deploy asked for, after defaults were applied and validated."""

    dtype: str                      # one of DTYPES
    max_batch: int                  # running sequences at most
    max_context: int                # tokens per sequence (prompt + output)
    kv_cache_fraction: float        # of free device memory (available RAM on CPU)
    max_queue: int = 256            # waiting requests before QueueFullError
    kv_block_size: int = 16         # tokens per KV block
    prefill_token_budget: int = 2048  # prompt tokens per step (chunked prefill)
    prefix_caching: bool = True     # reuse the KV blocks of prompts' common prefixes (blocks.py)
    kv_blocks: int | None = None    # fixed KV block count (tests); None = from kv_cache_fraction


@dataclass(frozen=True)
class EngineInfo:
    """What a loaded engine holds."""

    dtype: str
    max_batch: int
    max_context: int
    weights_bytes: int
    kv_cache_bytes: int
    kv_block_size: int
    kv_blocks_total: int
    eos_token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class EngineStats:
    """A cheap, thread-safe reading of an engine's counters (no percentiles here)."""

    running: int = 0
    waiting: int = 0
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    requests_total: int = 0
    requests_failed: int = 0
    preemptions_total: int = 0
    steps_total: int = 0
    prefix_cache_hit_tokens_total: int = 0   # prompt tokens taken from the prefix cache

    @property
    def kv_cache_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0


@dataclass(frozen=True)
class SamplingParams:
    """Validated sampling parameters (defaults match the proto's documented defaults)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt: str | None = None                               # raw prompt, or
    messages: tuple[tuple[str, str], ...] = ()              # (role, content) chat messages
    sampling: SamplingParams = field(default_factory=SamplingParams)
    cache_scope: str = ""   # requests share cached prompt prefixes only within one scope


@dataclass(frozen=True)
class TextDelta:
    """Streamed text: UTF-8 safe (never splits a character), stop strings already removed."""

    text: str
    tokens: int


@dataclass(frozen=True)
class RequestMetrics:
    """Everything measured about one finished request (times in seconds)."""

    request_id: str
    prompt_tokens: int
    completion_tokens: int
    queue_s: float
    ttft_s: float
    mean_itl_s: float
    itl_s: tuple[float, ...]  # every inter-token gap, for histograms
    total_s: float
    finish_reason: FinishReason


@dataclass(frozen=True)
class GenerationResult:
    """The last event of a stream."""

    finish_reason: FinishReason
    metrics: RequestMetrics
    error: str = ""
    stop: str = ""  # the stop string that matched, if any


class LoadProgress(Protocol):
    def __call__(self, stage: str, done: int, total: int, message: str) -> None:
        """stage is "loading_weights", "allocating_kv_cache" or "warming_up"; done/total in
        that stage's unit (bytes of weights, blocks, warm-up steps)."""


RequestObserver = Callable[[RequestMetrics], None]
