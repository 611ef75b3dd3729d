"""Engine choice and the typed vLLM options a Deploy may set, with their checks.

No free-form command-line passthrough: each option here is one vLLM flag whose value is
checked, so a caller cannot make the node run arbitrary flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import VllmConfig

BUILTIN = "builtin"
VLLM = "vllm"
ENGINES = (BUILTIN, VLLM)
# vLLM quantization methods an operator may name (vLLM's `--quantization` choices that load
# pre-quantized checkpoints); "" = what the checkpoint's config says.
QUANTIZATIONS = ("awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "compressed-tensors",
                 "bitsandbytes", "gguf", "experts_int8")
MAX_BATCHED_TOKENS_LIMIT = 1 << 20
MAX_TENSOR_PARALLEL = 64
MAX_RESTARTS = 10   # restarts after a crash a Deploy may ask for (DeployRequest.max_restarts)


class OptionError(ValueError):
    """An option out of range; the message is one sentence for INVALID_ARGUMENT."""


@dataclass(frozen=True)
class VllmOptions:
    """What a vLLM deployment was asked for beyond the common EngineSpec."""

    tensor_parallel_size: int = 1
    max_num_batched_tokens: int = 0          # 0 = vLLM's default
    enable_prefix_caching: bool | None = None  # None = the node's engine.prefix_caching
    quantization: str = ""
    gpu_memory_utilization: float = 0.0      # 0 = from kv_cache_fraction (GPU nodes)
    max_restarts: int = VllmConfig.restarts  # restarts after a crash while READY, then FAILED


def engine_name(requested: str) -> str:
    """The engine a Deploy asked for ("" = builtin), or OptionError."""
    name = (requested or BUILTIN).lower()
    if name not in ENGINES:
        raise OptionError(f"engine {requested!r} is unknown; use one of {', '.join(ENGINES)}.")
    return name


def check_builtin(device_count: int, tensor_parallel_size: int, has_vllm_options: bool,
                  max_restarts: int | None = None) -> None:
    """The built-in engine runs a model on one device and takes no vLLM options nor a
    restart policy (it runs inside musad: there is no child to restart)."""
    if device_count > 1 or tensor_parallel_size > 1:
        raise OptionError(f"The built-in engine runs a model on one device; {max(device_count, tensor_parallel_size)} "
                          "were asked for. Deploy with engine \"vllm\" for tensor parallelism across devices.")
    if has_vllm_options:
        raise OptionError("max_num_batched_tokens, enable_prefix_caching, quantization and gpu_memory_utilization "
                          "apply to engine \"vllm\"; the built-in engine does not take them.")
    if max_restarts is not None:
        raise OptionError("max_restarts applies to engine \"vllm\" (a child process musad restarts after a "
                          "crash); the built-in engine runs inside musad and does not take it.")


def check_vllm(backend: str, device_indices: tuple[int, ...], tensor_parallel_size: int, cpu_count: int,
               max_num_batched_tokens: int, enable_prefix_caching: bool | None, quantization: str,
               gpu_memory_utilization: float, max_restarts: int | None, default_restarts: int) -> VllmOptions:
    """Validated VllmOptions (OptionError with a sentence otherwise). max_restarts None =
    default_restarts (the node's engines.vllm.restarts).

    GPU nodes: one rank per device, so tensor_parallel_size (default: the number of devices
    given) must equal the number of device_indices. CPU nodes: the ranks split the cores."""
    tp = tensor_parallel_size or (len(device_indices) if backend != "cpu" else 1) or 1
    if not 1 <= tp <= MAX_TENSOR_PARALLEL:
        raise OptionError(f"tensor_parallel_size {tp} is outside 1..{MAX_TENSOR_PARALLEL}.")
    if backend == "cpu":
        if tp > max(1, cpu_count):
            raise OptionError(f"tensor_parallel_size {tp} is more than this CPU node's {cpu_count} cores; "
                              "each rank needs at least one core.")
    elif tp != len(device_indices):
        raise OptionError(f"tensor_parallel_size {tp} needs {tp} {backend} devices, one per rank; "
                          f"device_indices gives {len(device_indices)}.")
    if not 0 <= max_num_batched_tokens <= MAX_BATCHED_TOKENS_LIMIT:
        raise OptionError(f"max_num_batched_tokens {max_num_batched_tokens} is outside "
                          f"0..{MAX_BATCHED_TOKENS_LIMIT} (0 = vLLM's default).")
    q = quantization.lower()
    if q and q not in QUANTIZATIONS:
        raise OptionError(f"quantization {quantization!r} is not one vLLM loads here; use one of "
                          f"{', '.join(QUANTIZATIONS)}, or leave it empty for the checkpoint's own.")
    g = gpu_memory_utilization
    if not math.isfinite(g) or not 0 <= g <= 0.98:
        raise OptionError(f"gpu_memory_utilization {g} is outside (0, 0.98] (0 = from kv_cache_fraction).")
    if g and backend == "cpu":
        raise OptionError("gpu_memory_utilization applies to GPU nodes; on a CPU node vLLM's KV cache size "
                          "comes from kv_cache_fraction (or engines.vllm.cpu_kv_cache_gib).")
    if max_restarts is not None and not 0 <= max_restarts <= MAX_RESTARTS:
        raise OptionError(f"max_restarts {max_restarts} is outside 0..{MAX_RESTARTS} (restarts after a crash; "
                          "leave it unset for the node's engines.vllm.restarts).")
    return VllmOptions(tensor_parallel_size=tp, max_num_batched_tokens=max_num_batched_tokens,
                       enable_prefix_caching=enable_prefix_caching, quantization=q, gpu_memory_utilization=g,
                       max_restarts=default_restarts if max_restarts is None else max_restarts)
