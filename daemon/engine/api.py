"""The engine's torch-free surface: what the rest of the daemon may know about the engine.

The daemon's deployment manager, telemetry, metrics and gRPC servicers import only this
module; torch stays inside daemon/engine (and daemon/devices). Everything here is a plain
frozen dataclass or an exception, safe to hand across threads.
"""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Protocol

from ..config import EngineConfig as _DEFAULTS


DTYPES = ("bfloat16", "float16", "float32")


class FinishReason(enum.Enum):
    STOP = "stop"            # EOS or a stop string
    LENGTH = "length"        # max_tokens or the context limit
    CANCELLED = "cancelled"  # client cancelled, or the model was undeployed
    ERROR = "error"          # the engine failed this request


# The error of a request ended because its client left too many tokens unread (the start of
# GenerationResult.error; transports turn it into RESOURCE_EXHAUSTED).
CLIENT_STOPPED_READING = "the client stopped reading"


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
    # The defaults below are musad.toml's [engine] defaults (config.EngineConfig), written once there.
    max_queue: int = _DEFAULTS.max_queue                  # waiting requests before QueueFullError
    kv_block_size: int = _DEFAULTS.kv_block_size          # tokens per KV block
    prefill_token_budget: int = _DEFAULTS.prefill_token_budget  # prompt tokens per step (chunked prefill)
    prefix_caching: bool = _DEFAULTS.prefix_caching       # reuse the KV blocks of prompts' common prefixes (blocks.py)
    kv_blocks: int | None = None    # fixed KV block count (tests); None = from kv_cache_fraction
    template_timeout_s: float = _DEFAULTS.template_timeout_s  # a chat template rendering longer fails its request
    stream_backlog_tokens: int = _DEFAULTS.stream_backlog_tokens  # unread tokens before a stream is cancelled


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
class EngineHistogram:
    """A latency histogram an engine measured itself (summed over its internal engines), beside
    the latencies musad measures itself; engines that have them offer `histograms()`)."""

    name: str                                # e.g. "time_to_first_token_seconds"
    doc: str
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ending with +Inf
    sum: float


@dataclass(frozen=True)
class SamplingParams:
    """Validated sampling parameters: the daemon's one list of them and their defaults (the
    defaults the proto documents for an unset field). `sampling_from_fields` builds and checks
    one from any transport; services/inference_convert.py reads the proto by these fields."""

    temperature: float = 1.0           # >= 0; 0 = greedy
    top_p: float = 1.0                 # (0, 1]
    top_k: int = 0                     # >= 0; 0 = off
    repetition_penalty: float = 1.0    # > 0; 1 = off (HF semantics)
    frequency_penalty: float = 0.0     # -2..2; 0 = off (OpenAI semantics)
    presence_penalty: float = 0.0      # -2..2; 0 = off
    seed: int | None = None            # same seed, same output
    max_tokens: int = 256              # new tokens at most (capped by the node's limit)
    stop: tuple[str, ...] = ()         # stop strings, matched across token boundaries
    ignore_eos: bool = False           # keep generating past EOS (benchmarks)

    def validate(self, max_tokens_limit: int, max_stop_strings: int) -> None:
        """Raises InvalidRequestError with a sentence for a value out of range."""
        lo, hi = SAMPLING_SCALE_RANGE
        if self.temperature != 0 and not lo <= self.temperature <= hi:   # also refuses NaN
            raise InvalidRequestError(
                f"temperature must be 0 (greedy) or between {lo:g} and {hi:g}; got {self.temperature:g}.")
        if not (0 < self.top_p <= 1):
            raise InvalidRequestError(f"top_p must be in (0, 1]; got {self.top_p}.")
        if self.top_k < 0:
            raise InvalidRequestError(f"top_k must be 0 (off) or more; got {self.top_k}.")
        if not lo <= self.repetition_penalty <= hi:
            raise InvalidRequestError(
                f"repetition_penalty must be between {lo:g} and {hi:g} (1 = off); got {self.repetition_penalty:g}.")
        for name in ("frequency_penalty", "presence_penalty"):
            v = getattr(self, name)
            if not (-2 <= v <= 2):
                raise InvalidRequestError(f"{name} must be between -2 and 2; got {v}.")
        if self.max_tokens > max_tokens_limit:
            raise InvalidRequestError(
                f"max_tokens is {self.max_tokens}; this node allows at most {max_tokens_limit}.")
        if len(self.stop) > max_stop_strings:
            raise InvalidRequestError(
                f"{len(self.stop)} stop strings given; at most {max_stop_strings} are allowed.")
        if any(not s for s in self.stop):
            raise InvalidRequestError("stop strings must not be empty.")
        longest = max((len(s) for s in self.stop), default=0)
        if longest > MAX_STOP_CHARS:
            raise InvalidRequestError(
                f"A stop string is {longest:,} characters; each may have at most {MAX_STOP_CHARS}.")


MAX_STOP_CHARS = 256   # per stop string
# Temperature (other than 0) and repetition_penalty divide or multiply fp32 logits: outside
# this range they only say "greedy" or "never repeat" less precisely, and a tiny value (1e-45)
# overflowed the logits to inf (the sampler is also safe per row: engine/sampling.py).
SAMPLING_SCALE_RANGE = (1e-2, 100.0)
SAMPLING_FIELDS = tuple(f.name for f in fields(SamplingParams))


def _caster(hint: Any) -> Callable[[Any], Any]:
    if typing.get_origin(hint) is tuple:
        return lambda v: tuple(str(x) for x in v)
    if hint in (float, int, bool):
        return hint
    (inner,) = (a for a in typing.get_args(hint) if a is not type(None))   # X | None
    return inner


_CASTS = {name: _caster(hint) for name, hint in typing.get_type_hints(SamplingParams).items()}


def sampling_from_fields(values: Mapping[str, Any], *, max_tokens_limit: int,
                         max_stop_strings: int) -> SamplingParams:
    """Validated SamplingParams from plain values by field name, whatever the transport: a
    name missing or None takes the default (max_tokens: the default capped by the node's
    limit). Raises InvalidRequestError with a sentence for an unknown name or a bad value."""
    unknown = sorted(set(values) - set(SAMPLING_FIELDS))
    if unknown:
        raise InvalidRequestError(f"Unknown sampling parameter(s): {', '.join(unknown)}.")
    kwargs = {name: _CASTS[name](v) for name, v in values.items() if v is not None}
    kwargs.setdefault("max_tokens", min(SamplingParams.max_tokens, max_tokens_limit))
    params = SamplingParams(**kwargs)
    params.validate(max_tokens_limit, max_stop_strings)
    return params


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt: str | None = None                               # raw prompt, or
    messages: tuple[tuple[str, str], ...] = ()              # (role, content) chat messages
    sampling: SamplingParams = field(default_factory=SamplingParams)
    cache_scope: str = ""   # requests share cached prompt prefixes only within one scope


@dataclass(frozen=True)
class TextDelta:
    """Streamed text: UTF-8 safe (never splits a character), stop strings already removed.

    `prompt_tokens` is the request's prompt token count, carried by every delta, so a request
    that ends without its GenerationResult (the client went away) is still counted with the
    prompt it cost; 0 where the engine does not know it."""

    text: str
    tokens: int
    prompt_tokens: int = 0


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
