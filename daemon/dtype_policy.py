"""What dtype "auto" deploys a model as: the one definition of the rule.

GPUs: the checkpoint's half type (bfloat16 for a float32 or unknown checkpoint). CPUs:
bfloat16 for a bf16 or fp16 checkpoint when the engine's native forward runs there (the
device capability lists avx512_bf16, amx_bf16 or avx512f: bf16 weights are half the bytes
of float32 and decode about twice as fast), else float32 (on AVX2 alone torch's bf16 is
emulated and slower than float32). The deployment manager applies it; Node.GetInfo reports
its answers (`auto_dtype`, by checkpoint dtype) so the console's memory check uses the same
dtype without a copy of the rule.
"""

from __future__ import annotations

from .devices.cpu import NATIVE_BF16_FLAGS

HALF_DTYPES = ("bfloat16", "float16")
# Checkpoint dtypes GetInfo answers for; "" stands for any other or unknown checkpoint dtype.
CHECKPOINT_DTYPES = ("bfloat16", "float16", "float32", "")


def auto_dtype(backend: str, checkpoint_dtype: str, capability: str) -> str:
    """The dtype "auto" deploys a `checkpoint_dtype` checkpoint as on a `backend` device
    whose capability string is `capability`."""
    half = checkpoint_dtype in HALF_DTYPES
    if backend != "cpu":
        return checkpoint_dtype if half else "bfloat16"
    native = set(NATIVE_BF16_FLAGS) & set(capability.split())
    return "bfloat16" if native and half else "float32"


def auto_dtype_table(backend: str, capability: str) -> dict[str, str]:
    """The rule's answer for every checkpoint dtype in CHECKPOINT_DTYPES (for GetInfo)."""
    return {ck: auto_dtype(backend, ck, capability) for ck in CHECKPOINT_DTYPES}
