"""Per-model statistics for telemetry: token rates and latency percentiles.

A deployment owns one `ModelStatsWindow`; the engine's RequestObserver feeds it finished
requests (`add`, engine thread), and the telemetry sampler asks it for a `ModelStatsSample`
(`sample`, any thread): token rates over about 2 s of counters, and TTFT / inter-token /
end-to-end latency percentiles over the requests finished in the last minute.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engine.api import EngineStats, RequestMetrics

_WINDOW_S = 60.0          # latency percentiles cover requests finished in the last minute
_WINDOW_MAX = 4096        # and at most this many samples of each kind
_RATE_WINDOW_S = 2.0      # tokens/s is measured over about this span


@dataclass(frozen=True)
class ModelStatsSample:
    """One model's statistics for telemetry (percentiles in seconds; 0 when no data)."""

    model: str
    stats: EngineStats
    prompt_tokens_per_s: float = 0.0
    generation_tokens_per_s: float = 0.0
    ttft: tuple[float, float, float] = (0.0, 0.0, 0.0)   # p50, p95, p99
    itl: tuple[float, float, float] = (0.0, 0.0, 0.0)
    e2e: tuple[float, float] = (0.0, 0.0)                 # p50, p99


class ModelStatsWindow:
    """Recent request latencies and token counters of one model (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ttft: collections.deque[tuple[float, float]] = collections.deque(maxlen=_WINDOW_MAX)
        self.itl: collections.deque[tuple[float, float]] = collections.deque(maxlen=_WINDOW_MAX)
        self.e2e: collections.deque[tuple[float, float]] = collections.deque(maxlen=_WINDOW_MAX)
        self._version = 0
        self._cached: tuple[int, float, Any] = (-1, 0.0, None)
        self._rates: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=64)

    def add(self, m: RequestMetrics) -> None:
        """One finished request (engine thread)."""
        now = time.monotonic()
        with self._lock:
            if m.completion_tokens > 0:
                self.ttft.append((now, m.ttft_s))
            self.itl.extend((now, g) for g in m.itl_s)
            self.e2e.append((now, m.total_s))
            self._version += 1

    def percentiles(self) -> tuple[tuple, tuple, tuple]:
        """(ttft p50/p95/p99, itl p50/p95/p99, e2e p50/p99) over the last minute, cached ~1 s."""
        now = time.monotonic()
        with self._lock:
            version, at, cached = self._cached
            if version == self._version and now - at < 1.0 and cached is not None:
                return cached
            cutoff = now - _WINDOW_S

            def pct(d, qs):
                vals = [v for t, v in d if t >= cutoff]
                return tuple(float(x) for x in np.percentile(vals, qs)) if vals else tuple(0.0 for _ in qs)

            result = (pct(self.ttft, (50, 95, 99)), pct(self.itl, (50, 95, 99)), pct(self.e2e, (50, 99)))
            self._cached = (self._version, now, result)
            return result

    def sample(self, model: str, st: EngineStats) -> ModelStatsSample:
        """The model's statistics now, given its engine counters `st` (any thread)."""
        now = time.monotonic()
        rs = self._rates
        rs.append((now, st.prompt_tokens_total, st.generation_tokens_total))
        while len(rs) > 2 and now - rs[1][0] >= _RATE_WINDOW_S:
            rs.popleft()
        t0, p0, g0 = rs[0]
        span = now - t0
        p_rate = (st.prompt_tokens_total - p0) / span if span > 0 else 0.0
        g_rate = (st.generation_tokens_total - g0) / span if span > 0 else 0.0
        ttft, itl, e2e = self.percentiles()
        return ModelStatsSample(model, st, p_rate, g_rate, ttft, itl, e2e)
