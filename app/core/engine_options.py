"""The engines a Deploy may name and the ranges of the typed vLLM options, as the console
checks them before it sends a request.

The daemon's checks (musad's supervised/options.py) are the authority and are not on the
wire as data; node.proto states the same ranges in comments on EngineOptions, and
tests/app/test_deploy_engines.py sends a real daemon the values on both sides of each bound
here, so this table cannot drift from the daemon's answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BUILTIN = "builtin"
VLLM = "vllm"
MAX_TENSOR_PARALLEL = 64
MAX_NUM_BATCHED_TOKENS = 1 << 20             # 0 = vLLM's default
GPU_MEMORY_UTILIZATION_MAX = 0.98            # (0, 0.98]; 0 = vLLM's default below
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9    # what vLLM reserves of each device when not told
MAX_RESTARTS = 10                            # DeployRequest.max_restarts, 0..10; unset = the node's
# quantization methods the daemon lets a Deploy name; "" = the checkpoint's own
QUANTIZATIONS = ("awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "compressed-tensors",
                 "bitsandbytes", "gguf", "experts_int8")


@dataclass(frozen=True)
class EngineOptions:
    """DeployRequest.engine_options (engine "vllm" only)."""

    max_num_batched_tokens: int = 0          # 0 = vLLM's default
    enable_prefix_caching: bool | None = None  # None = the node's engine.prefix_caching
    quantization: str = ""                   # "" = the checkpoint's own
    gpu_memory_utilization: float = 0.0      # GPU nodes; 0 = vLLM's 0.9

    def given(self) -> bool:
        """Whether any option is set (the built-in engine takes none)."""
        return bool(self.max_num_batched_tokens or self.quantization or self.gpu_memory_utilization
                    or self.enable_prefix_caching is not None)

    def problem(self, cpu_node: bool) -> str:
        """A sentence for the first option out of range, "" when they are all valid."""
        if not 0 <= self.max_num_batched_tokens <= MAX_NUM_BATCHED_TOKENS:
            return f"max_num_batched_tokens must be within 0..{MAX_NUM_BATCHED_TOKENS} (0 = vLLM's default)."
        if self.quantization and self.quantization.lower() not in QUANTIZATIONS:
            return f"quantization {self.quantization!r} is not one vLLM loads here."
        g = self.gpu_memory_utilization
        if not math.isfinite(g) or not 0 <= g <= GPU_MEMORY_UTILIZATION_MAX:
            return f"gpu_memory_utilization must be within (0, {GPU_MEMORY_UTILIZATION_MAX}] (0 = vLLM's default)."
        if g and cpu_node:
            return "gpu_memory_utilization applies to GPU nodes; a CPU node sizes vLLM's KV cache itself."
        return ""
