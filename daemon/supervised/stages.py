"""vLLM's log lines -> Deploy stages.

vLLM reports its start-up only in its log; these patterns match the lines vLLM 0.28-0.32
prints (the API server, the engine core and the workers share the child's output). A line
that matches nothing changes nothing, so a vLLM that words them differently still deploys;
it only shows fewer stages. READY comes from the health endpoint, never from a log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (pattern, stage, message); stages only move forward
_RULES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"Starting to load model|Loading model from|Loading safetensors checkpoint"),
     "loading_weights", "vLLM is loading the weights"),
    (re.compile(r"Loading weights took|Model loading took"), "loading_weights", "vLLM loaded the weights"),
    (re.compile(r"KV cache size|GiB for KV cache|# (?:GPU|CPU) blocks|Memory profiling takes|"
                r"Available KV cache memory"),
     "allocating_kv_cache", "vLLM is profiling memory and allocating its KV cache"),
    (re.compile(r"init engine \(profile, create kv cache, warmup model\) took|Capturing CUDA graph|"
                r"Graph capturing finished|Compiling a graph|torch.compile takes"),
     "warming_up", "vLLM is warming up"),
    (re.compile(r"Starting vLLM (?:API )?server|Uvicorn running on|Application startup complete"),
     "warming_up", "vLLM's server is up; waiting for its health check"),
)
_ORDER = ("starting_process", "loading_weights", "allocating_kv_cache", "warming_up")
# a line that says why start-up failed (the last one seen is the FAILED reason's headline)
_ERROR = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception): (.+)$|^ERROR [\d-]+ [\d:]+ \[[^]]*\]\s*(.+)$")
_PREFIX = re.compile(r"^\((?:APIServer|EngineCore\w*|\w*Worker[\w-]*) pid=\d+\)\s*")
_WEIGHTS_GIB = re.compile(r"Model loading took ([\d.]+) ?GiB")
_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")


@dataclass
class StartupTracker:
    """Feed it every line; it reports each new stage once and remembers what vLLM said."""

    stage: str = "starting_process"
    message: str = ""
    error: str = ""         # what vLLM said went wrong: its first exception, else its first ERROR line
    _exception: str = ""
    _logged: str = ""
    weights_bytes: int = 0
    kv_tokens: int = 0

    def feed(self, line: str) -> tuple[str, str] | None:
        """(stage, message) when `line` moves start-up to a later stage, else None."""
        text = _PREFIX.sub("", line)
        m = _ERROR.search(text)
        if m and m.group(1) and not self._exception:   # the first exception is the root cause
            self._exception = m.group(1).strip()[:400]
        elif m and m.group(2) and not self._logged:
            self._logged = m.group(2).strip()[:400]
        self.error = self._exception or self._logged
        if (w := _WEIGHTS_GIB.search(text)) is not None:
            self.weights_bytes = int(float(w.group(1)) * (1 << 30))
        if (k := _KV_TOKENS.search(text)) is not None:
            self.kv_tokens = int(k.group(1).replace(",", ""))
        for pattern, stage, message in _RULES:
            if pattern.search(text) and _ORDER.index(stage) >= _ORDER.index(self.stage):
                if message == self.message:
                    return None
                self.stage, self.message = stage, message
                return stage, message
        return None
