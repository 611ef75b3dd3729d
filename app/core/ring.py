"""Preallocated numpy ring buffers for telemetry history.

A node keeps up to an hour at 1 Hz for the node view's longest window, and a console may
watch hundreds of nodes, so rings are compact: float64 time (Unix seconds) plus float32
channel values, written once in place. Reading returns oldest-first arrays: a slice view
when the ring has not wrapped, one concatenation when it has. Missing readings are NaN.
"""

from __future__ import annotations

from typing import Iterable

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
    """A fixed-size ring of (time, channels...) rows."""

    __slots__ = ("capacity", "channels", "_t", "_v", "_next", "_size")

    def __init__(self, capacity: int, channels: int) -> None:
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._t = np.full(self.capacity, np.nan, dtype=np.float64)
        self._v = np.full((self.capacity, self.channels), np.nan, dtype=np.float32)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, t: float, values) -> None:
        i = self._next
        self._t[i] = t
        self._v[i] = values
        self._next = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def extend(self, times: np.ndarray, block: np.ndarray) -> None:
        """Appends many rows at once (a back-fill batch) with at most two slice writes."""
        n = len(times)
        if n == 0:
            return
        if n > self.capacity:
            times, block, n = times[-self.capacity:], block[-self.capacity:], self.capacity
        first = min(n, self.capacity - self._next)
        self._t[self._next:self._next + first] = times[:first]
        self._v[self._next:self._next + first] = block[:first]
        if first < n:
            self._t[:n - first] = times[first:]
            self._v[:n - first] = block[first:]
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def _ordered(self, arr: np.ndarray) -> np.ndarray:
        if self._size < self.capacity:
            return arr[:self._size]
        if self._next == 0:
            return arr
        return np.concatenate((arr[self._next:], arr[:self._next]))

    def times(self) -> np.ndarray:
        return self._ordered(self._t)

    def column(self, col: int) -> np.ndarray:
        return self._ordered(self._v[:, col])

    def tail(self, col: int, n: int) -> np.ndarray:
        """The newest n values of one channel, oldest first."""
        n = min(n, self._size)
        idx = (self._next - n + np.arange(n)) % self.capacity
        return self._v[idx, col]

    def last_time(self) -> float:
        return float(self._t[(self._next - 1) % self.capacity]) if self._size else 0.0

    def clear(self) -> None:
        self._t.fill(np.nan)
        self._v.fill(np.nan)
        self._next = 0
        self._size = 0

    @property
    def nbytes(self) -> int:
        return self._t.nbytes + self._v.nbytes


_EMPTY = np.empty(0, dtype=np.float64)
_EMPTY.flags.writeable = False


def _nan(value: float | None) -> float:
    return np.nan if value is None else value


class NodeHistory:
    """All chartable history of one node: one ring per device and one per model."""

    def __init__(self, capacity: int = 3600) -> None:
        self.capacity = capacity
        self.devices: dict[int, Ring] = {}
        self.models: dict[str, Ring] = {}
        self.host = Ring(capacity, 2)  # cpu %, memory %
        self.last_time = 0.0

    def add(self, snapshot: Snapshot) -> None:
        """One live sample (the common case at 1 Hz): plain row writes, no batch set-up."""
        t = snapshot.time_unix_ms / 1000.0
        if t <= self.last_time:
            return
        self.last_time = t
        h = snapshot.host
        self.host.append(t, (h.cpu_percent, 100.0 * h.memory_used_bytes / h.memory_total_bytes
                             if h.memory_total_bytes else np.nan))
        for d in snapshot.devices:
            ring = self.devices.get(d.index)
            if ring is None:
                ring = self.devices[d.index] = Ring(self.capacity, len(DEVICE_CHANNELS))
            ring.append(t, (_nan(d.utilization_percent), _nan(d.memory_percent),
                            _nan(d.temperature_celsius), _nan(d.power_watts)))
        for m in snapshot.models:
            ring = self.models.get(m.model)
            if ring is None:
                ring = self.models[m.model] = Ring(self.capacity, len(MODEL_CHANNELS))
            ring.append(t, (m.ttft_p50_ms, m.ttft_p95_ms, m.ttft_p99_ms, m.itl_p50_ms,
                            m.itl_p95_ms, m.itl_p99_ms, m.generation_tokens_per_second,
                            m.running, m.waiting))

    def add_many(self, snapshots: Iterable[Snapshot]) -> None:
        """Adds a batch (oldest first); samples not newer than what we hold are skipped
        (a reconnect back-fills history that overlaps ours)."""
        if not isinstance(snapshots, (list, tuple)):
            snapshots = list(snapshots)
        if len(snapshots) == 1:
            self.add(snapshots[0])
            return
        fresh = [s for s in snapshots if s.time_unix_ms / 1000.0 > self.last_time]
        fresh.sort(key=lambda s: s.time_unix_ms)
        if not fresh:
            return
        times = np.array([s.time_unix_ms / 1000.0 for s in fresh], dtype=np.float64)
        _, keep = np.unique(times, return_index=True)  # one row per timestamp
        if len(keep) != len(fresh):
            fresh = [fresh[i] for i in keep]
            times = times[keep]
        self.last_time = float(times[-1])
        self.host.extend(times, np.array(
            [(s.host.cpu_percent, 100.0 * s.host.memory_used_bytes / s.host.memory_total_bytes
              if s.host.memory_total_bytes else np.nan) for s in fresh], dtype=np.float32))
        rows: dict[int, tuple[list, list]] = {}
        for t, s in zip(times.tolist(), fresh):
            for d in s.devices:
                ts, vs = rows.setdefault(d.index, ([], []))
                ts.append(t)
                vs.append((_nan(d.utilization_percent), _nan(d.memory_percent),
                           _nan(d.temperature_celsius), _nan(d.power_watts)))
        for index, (ts, vs) in rows.items():
            ring = self.devices.get(index)
            if ring is None:
                ring = self.devices[index] = Ring(self.capacity, len(DEVICE_CHANNELS))
            ring.extend(np.asarray(ts), np.asarray(vs, dtype=np.float32))
        mrows: dict[str, tuple[list, list]] = {}
        for t, s in zip(times.tolist(), fresh):
            for m in s.models:
                ts, vs = mrows.setdefault(m.model, ([], []))
                ts.append(t)
                vs.append((m.ttft_p50_ms, m.ttft_p95_ms, m.ttft_p99_ms, m.itl_p50_ms,
                           m.itl_p95_ms, m.itl_p99_ms, m.generation_tokens_per_second,
                           m.running, m.waiting))
        for name, (ts, vs) in mrows.items():
            ring = self.models.get(name)
            if ring is None:
                ring = self.models[name] = Ring(self.capacity, len(MODEL_CHANNELS))
            ring.extend(np.asarray(ts), np.asarray(vs, dtype=np.float32))

    def device_channel(self, index: int, channel: str) -> tuple[np.ndarray, np.ndarray]:
        ring = self.devices.get(index)
        if ring is None:
            return _EMPTY, _EMPTY
        return ring.times(), ring.column(DEVICE_CHANNELS.index(channel))

    def device_tail(self, index: int, channel: str, n: int) -> np.ndarray:
        ring = self.devices.get(index)
        if ring is None:
            return _EMPTY
        return ring.tail(DEVICE_CHANNELS.index(channel), n)

    def model_channel(self, model: str, channel: str) -> tuple[np.ndarray, np.ndarray]:
        ring = self.models.get(model)
        if ring is None:
            return _EMPTY, _EMPTY
        return ring.times(), ring.column(MODEL_CHANNELS.index(channel))

    @property
    def nbytes(self) -> int:
        return self.host.nbytes + sum(r.nbytes for r in self.devices.values()) + \
            sum(r.nbytes for r in self.models.values())
