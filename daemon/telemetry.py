"""One shared sampler for every Telemetry.Stream subscriber, plus the history ring.

A single thread samples the host (psutil), the devices and the deployments' statistics
into a `Reading`, has the injected encoder (services/telemetry_encode.py) serialise it once,
and hands the bytes to the event loop with one `loop.call_soon_threadsafe` per tick. The
sampler knows no protobuf: the wire shape belongs to services/. On the loop, each
subscriber gets the snapshot when its own interval is due. The thread ticks at the fastest
interval any subscriber asks for (at least once a second, which feeds the history ring), so
100 subscribers cost one sample per tick, not 100.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import psutil

log = logging.getLogger(__name__)

HISTORY_PERIOD_S = 1.0   # resolution of the history ring
_QUEUE_DEPTH = 8         # snapshots a slow subscriber may lag before the oldest is dropped
_CLOSED = None           # queue sentinel: the stream ends


@dataclass(frozen=True)
class HostReading:
    cpu_percent: float          # all CPUs, 0..100
    memory_used_bytes: int
    memory_total_bytes: int
    load_average_1m: float


@dataclass(frozen=True)
class Reading:
    """One tick's sample, before encoding: what the encoder turns into a wire Snapshot."""

    time_unix_ms: int
    host: HostReading
    devices: tuple = ()         # devices.DeviceSample, index order
    models: tuple = ()          # deployments' ModelStatsSample


Encoder = Callable[[Reading], bytes]


@dataclass(frozen=True)
class Published:
    """A snapshot as sampled (`reading`) and serialised once (`data`)."""

    time: float              # time.monotonic() at sampling
    reading: Reading
    data: bytes


class Subscription:
    """One subscriber's queue and cadence; iterate with `await next_snapshot()`."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.next_due = 0.0
        self.queue: asyncio.Queue[Published | None] = asyncio.Queue(_QUEUE_DEPTH)
        self.dropped = 0

    def offer(self, item: Published | None) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)

    async def next_snapshot(self) -> Published | None:
        """The next due snapshot, or None once the sampler has closed."""
        return await self.queue.get()


class TelemetrySampler:
    """Owns the sampling thread, the history ring and the subscribers.

    `devices` is an Accelerator (sample() -> DeviceSample list); `model_stats` returns the
    deployments' statistics; `encode` turns a Reading into the bytes every subscriber gets.
    All three are called on the sampler thread.
    """

    def __init__(self, devices: Any, model_stats: Callable[[], list], encode: Encoder,
                 history_seconds: int = 900):
        self._devices = devices
        self._model_stats = model_stats
        self._encode = encode
        self.history: collections.deque[Published] = collections.deque(
            maxlen=max(1, int(history_seconds / HISTORY_PERIOD_S)))
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._tick_s = HISTORY_PERIOD_S
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._last_history = 0.0
        self._last_tick = float("-inf")
        self.latest: Published | None = None
        self.samples_taken = 0     # for tests and benchmarks: sampler ticks so far
        self.sample_errors = 0

    # -- lifecycle (event loop side) -------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        psutil.cpu_percent(interval=None)  # prime the host CPU baseline
        self._thread = threading.Thread(target=self._run, name="telemetry-sampler", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops the thread and ends every subscriber's stream (call on the loop)."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            subs = list(self._subs)
            self._subs.clear()
        for sub in subs:
            sub.offer(_CLOSED)
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def closed(self) -> bool:
        return self._stopping

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    # -- subscribers (event loop side) -----------------------------------------------------

    def subscribe(self, interval_s: float) -> Subscription:
        sub = Subscription(interval_s)
        with self._lock:
            if self._stopping:
                sub.offer(_CLOSED)
                return sub
            self._subs.add(sub)
            self._retune()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)
            self._retune()

    def backfill(self, seconds: float) -> list[Published]:
        """History of the last `seconds`, oldest first."""
        if seconds <= 0:
            return []
        cutoff = time.monotonic() - seconds
        with self._lock:
            return [p for p in self.history if p.time >= cutoff]

    def _retune(self) -> None:
        """Tick at the fastest subscriber's interval (lock held)."""
        fastest = min((s.interval_s for s in self._subs), default=HISTORY_PERIOD_S)
        tick = min(fastest, HISTORY_PERIOD_S)
        if tick < self._tick_s:
            self._wake.notify_all()  # wake the sleeping thread to adopt the faster tick
        self._tick_s = tick

    def _publish(self, pub: Published) -> None:
        """On the loop: hand `pub` to each subscriber whose interval is due."""
        # Deliver when within half a tick of due, so a 1 s subscriber on a 0.1 s tick gets
        # every 10th sample instead of drifting to every 11th.
        slack = self._tick_s / 2
        for sub in tuple(self._subs):
            if pub.time + slack >= sub.next_due:
                sub.next_due += sub.interval_s
                if sub.next_due + slack < pub.time:  # new, or fell behind: restart its schedule
                    sub.next_due = pub.time + sub.interval_s
                sub.offer(pub)

    # -- sampling (sampler thread) ---------------------------------------------------------

    def sample_now(self) -> Published:
        """Takes one snapshot (any thread)."""
        now_wall = time.time()
        vm = psutil.virtual_memory()
        try:
            load1 = psutil.getloadavg()[0]
        except (AttributeError, OSError):
            load1 = 0.0
        host = HostReading(psutil.cpu_percent(interval=None), vm.total - vm.available, vm.total, load1)
        devices: tuple = ()
        try:
            devices = tuple(self._devices.sample())
        except Exception:  # noqa: BLE001 - a failing vendor call must not kill telemetry
            self.sample_errors += 1
            log.exception("device sampling failed")
        models: tuple = ()
        try:
            models = tuple(self._model_stats())
        except Exception:  # noqa: BLE001
            self.sample_errors += 1
            log.exception("engine statistics failed")
        reading = Reading(int(now_wall * 1000), host, devices, models)
        self.samples_taken += 1
        return Published(time.monotonic(), reading, self._encode(reading))

    def _run(self) -> None:
        next_tick = time.monotonic()
        while True:
            with self._lock:
                while not self._stopping:
                    # a faster subscriber may have arrived since the last sample: pull the tick in
                    due = min(next_tick, self._last_tick + self._tick_s)
                    wait = due - time.monotonic()
                    if wait <= 0:
                        break
                    self._wake.wait(wait)
                if self._stopping:
                    return
                tick = self._tick_s
            try:
                pub = self.sample_now()
            except Exception:  # noqa: BLE001 - the thread must outlive any one bad sample
                self.sample_errors += 1
                log.exception("sampling failed")
                next_tick = time.monotonic() + tick
                self._last_tick = time.monotonic()
                continue
            with self._lock:
                self._last_tick = pub.time
                self.latest = pub
                if pub.time - self._last_history >= HISTORY_PERIOD_S - tick / 2:
                    self.history.append(pub)
                    self._last_history = pub.time
                has_subs = bool(self._subs)
            if has_subs and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._publish, pub)
                except RuntimeError:  # loop closed
                    return
            next_tick = min(next_tick, pub.time) + tick  # a fixed schedule, no drift
            if next_tick < time.monotonic():  # fell behind (slow device read): skip, don't burst
                next_tick = time.monotonic() + tick
