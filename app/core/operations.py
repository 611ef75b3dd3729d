"""Commands the console sends to nodes and the results that come back.

Models (ListModels), deployments (Deploy / Undeploy) and text generation (Generate), as
frozen dataclasses. Results carry errors as values (`ok`, `error`) instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .engine_options import EngineOptions
from .sampling import Sampling


# --- models --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryEstimate:
    dtype: str
    weights_bytes: int = 0
    kv_bytes_per_token: int = 0
    total_bytes: int = 0


@dataclass(frozen=True)
class DeploymentInfo:
    dtype: str = ""
    device_indices: tuple[int, ...] = ()
    max_batch: int = 0
    max_context: int = 0
    weights_bytes: int = 0
    kv_cache_bytes: int = 0
    kv_block_size: int = 0
    kv_blocks_total: int = 0
    ready_unix_ms: int = 0
    engine: str = ""                     # "builtin" or "vllm" ("" from an older daemon: builtin)
    tensor_parallel_size: int = 0
    restarts: int = 0                    # a supervised engine restarted after crashes
    pid: int = 0                         # the supervised child's process id; 0 = built-in
    max_restarts: int = 0                # restarts allowed after a crash (vllm); `restarts` used


@dataclass(frozen=True)
class ModelEntry:
    """One model of a node's repository (Node.ListModels)."""

    name: str
    state: str = "available"   # available, error, pending, loading, ready, failed, unloading
    architecture: str = ""
    parameters: int = 0
    size_bytes: int = 0
    memory_estimates: tuple[MemoryEstimate, ...] = ()
    reason: str = ""
    max_position_embeddings: int = 0
    torch_dtype: str = ""
    deployment: DeploymentInfo | None = None
    num_layers: int = 0
    hidden_size: int = 0
    vocab_size: int = 0
    notice: str = ""          # a sentence the node asks to show beside the model (random weights)
    quantization: str = ""    # GGUF files: the quantization type, e.g. "Q4_1"

    def estimate(self, dtype: str) -> MemoryEstimate | None:
        return next((e for e in self.memory_estimates if e.dtype == dtype), None)


# --- deploy --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeploySpec:
    model: str
    dtype: str = ""                      # "" / "auto" = device default
    device_indices: tuple[int, ...] = ()
    max_batch: int = 0
    max_context: int = 0
    kv_cache_fraction: float = 0.0
    force: bool = False                  # deploy even on a device the daemon reports unhealthy
    engine: str = ""                     # "" / "builtin" = musad's own engine, "vllm" = supervised
    tensor_parallel_size: int = 0        # vllm: ranks; 0 = one per device given
    engine_options: EngineOptions = field(default_factory=EngineOptions)
    max_restarts: int | None = None      # vllm: restarts after a crash, 0..10; None = the node's default


@dataclass(frozen=True)
class DeployEvent:
    """One step of a Deploy stream; the last one has done=True and ok says how it ended."""

    op_id: str
    node_id: str
    model: str
    stage: str                 # validating, loading_weights, allocating_kv_cache, warming_up, ready, failed
    fraction: float = 0.0
    message: str = ""
    done: bool = False
    ok: bool = False
    done_bytes: int = 0
    total_bytes: int = 0
    elapsed_seconds: float = 0.0
    entry: ModelEntry | None = None   # the model as it now stands (on ready / failed)


@dataclass(frozen=True)
class UndeployResult:
    node_id: str
    model: str
    ok: bool
    message: str = ""
    freed_bytes: int = 0
    cancelled_requests: int = 0
    drained_requests: int = 0


# --- generate ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChatMessage:
    role: str      # system, user, assistant
    content: str


@dataclass(frozen=True)
class GenerateSpec:
    model: str
    prompt: str = ""
    messages: tuple[ChatMessage, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    request_id: str = ""


@dataclass(frozen=True)
class TokenChunk:
    """Text streamed since the previous chunk (the hub batches deltas, ~20 a second)."""

    stream_id: str
    text: str
    tokens: int
    node_id: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Timings:
    queue_ms: float = 0.0
    ttft_ms: float = 0.0
    mean_itl_ms: float = 0.0
    total_ms: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return 1000.0 / self.mean_itl_ms if self.mean_itl_ms > 0 else 0.0


@dataclass(frozen=True)
class GenerationDone:
    """The end of a Generate stream: finish_reason is stop, length, cancelled or error."""

    stream_id: str
    finish_reason: str
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    error: str = ""
    stop: str = ""
    node_id: str = ""
    request_id: str = ""

    @property
    def ok(self) -> bool:
        return self.finish_reason in ("stop", "length")


@dataclass(frozen=True)
class CommandError:
    """A command that failed before it produced its usual result (e.g. ListModels)."""

    node_id: str
    command: str      # list_models, undeploy, ...
    message: str
