"""Preallocated numpy ring buffers for telemetry history.

Each value is written twice (at i and i + capacity), so the newest n values are always one
contiguous slice: charts hand that view to `setData` with no copy and no allocation.
Missing readings are stored as NaN.
"""

from __future__ import annotations

import numpy as np

from .samples import Snapshot

# Per-device channels charted by the node view and the fleet sparklines.
DEVICE_CHANNELS = ("util", "mem", "temp", "power")
# Per-model channels.
MODEL_CHANNELS = (
    "ttft_p50", "ttft_p95", "ttft_p99", "itl_p50", "itl_p95", "itl_p99",
    "tokens_per_s", "running", "waiting",
)


class Ring:
    """A fixed-size ring of float64 rows: column 0 is time (Unix seconds), then channels."""

    __slots__ = ("capacity", "columns", "_data", "_next", "_size")

    def __init__(self, capacity: int, columns: int) -> None:
        self.capacity = int(capacity)
        self.columns = int(columns)
        self._data = np.full((2 * self.capacity, self.columns), np.nan, dtype=np.float64)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, row) -> None:
        i = self._next
        self._data[i] = row
        self._data[i + self.capacity] = row
        self._next = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def view(self) -> np.ndarray:
        """Oldest-first rows, a read-only view valid until the next append."""
        end = self._next + self.capacity if self._size == self.capacity else self._next
        v = self._data[end - self._size:end]
        v.flags.writeable = False
        return v

    def last(self) -> np.ndarray | None:
        if not self._size:
            return None
        return self._data[(self._next - 1) % self.capacity]

    def clear(self) -> None:
        self._data.fill(np.nan)
        self._next = 0
        self._size = 0


class NodeHistory:
    """All chartable history of one node: one ring per device and one per model."""

    def __init__(self, capacity: int = 3600) -> None:
        self.capacity = capacity
        self.devices: dict[int, Ring] = {}
        self.models: dict[str, Ring] = {}
        self.host = Ring(capacity, 3)  # time, cpu %, memory %
        self.last_time = 0.0

    def add(self, snapshot: Snapshot) -> None:
        t = snapshot.time_unix_ms / 1000.0
        if t <= self.last_time:  # backfill overlapping what we already hold after a reconnect
            return
        self.last_time = t
        h = snapshot.host
        mem = 100.0 * h.memory_used_bytes / h.memory_total_bytes if h.memory_total_bytes else np.nan
        self.host.append((t, h.cpu_percent, mem))
        for d in snapshot.devices:
            ring = self.devices.get(d.index)
            if ring is None:
                ring = self.devices[d.index] = Ring(self.capacity, 1 + len(DEVICE_CHANNELS))
            ring.append((t, _nan(d.utilization_percent), _nan(d.memory_percent),
                         _nan(d.temperature_celsius), _nan(d.power_watts)))
        for m in snapshot.models:
            ring = self.models.get(m.model)
            if ring is None:
                ring = self.models[m.model] = Ring(self.capacity, 1 + len(MODEL_CHANNELS))
            ring.append((t, m.ttft_p50_ms, m.ttft_p95_ms, m.ttft_p99_ms, m.itl_p50_ms,
                         m.itl_p95_ms, m.itl_p99_ms, m.generation_tokens_per_second,
                         m.running, m.waiting))

    def device_channel(self, index: int, channel: str) -> tuple[np.ndarray, np.ndarray]:
        ring = self.devices.get(index)
        if ring is None:
            return _EMPTY, _EMPTY
        v = ring.view()
        return v[:, 0], v[:, 1 + DEVICE_CHANNELS.index(channel)]

    def model_channel(self, model: str, channel: str) -> tuple[np.ndarray, np.ndarray]:
        ring = self.models.get(model)
        if ring is None:
            return _EMPTY, _EMPTY
        v = ring.view()
        return v[:, 0], v[:, 1 + MODEL_CHANNELS.index(channel)]


_EMPTY = np.empty(0, dtype=np.float64)
_EMPTY.flags.writeable = False


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)
