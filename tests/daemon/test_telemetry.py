"""The shared telemetry sampler: one sampling thread for all subscribers, each on its own cadence."""

from __future__ import annotations

import asyncio

import pytest

from musaops.daemon.devices import detect
from musaops.daemon.services.telemetry_encode import encode_snapshot
from musaops.daemon.telemetry import TelemetrySampler
from musaops.v1 import telemetry_pb2, telemetry_pb2_grpc

pytestmark = pytest.mark.timeout(120)


async def test_hundred_subscribers_share_one_sampler(daemon):
    sampler = daemon.ctx.telemetry
    per_stream = 10
    async with daemon.channel() as ch:
        stub = telemetry_pb2_grpc.TelemetryStub(ch)

        async def subscriber():
            got = []
            call = stub.Stream(telemetry_pb2.StreamRequest(interval_ms=100))
            async for snap in call:
                got.append(snap.time_unix_ms)
                if len(got) == per_stream:
                    break
            call.cancel()
            return got

        before = sampler.samples_taken
        results = await asyncio.gather(*(subscriber() for _ in range(100)))
        taken = sampler.samples_taken - before
    assert all(len(r) == per_stream and r == sorted(r) and len(set(r)) == per_stream for r in results)
    # 1,000 snapshots delivered; one sample per tick serves every subscriber. Allow for the
    # streams starting at different ticks (they need not all start in the same 100 ms).
    assert taken < 4 * per_stream, taken
    distinct = {t for r in results for t in r}
    assert len(distinct) <= taken + 1


async def test_each_subscriber_gets_its_own_cadence():
    devices = detect("cpu")
    sampler = TelemetrySampler(devices, list, encode_snapshot, history_seconds=60)
    sampler.start()
    try:
        fast, slow = sampler.subscribe(0.1), sampler.subscribe(0.5)
        fast_times, slow_times = [], []
        while len(fast_times) < 16:
            fast_times.append((await fast.next_snapshot()).time)
        while not slow.queue.empty():
            slow_times.append(slow.queue.get_nowait().time)
    finally:
        sampler.close()
        devices.close()
    # The slow subscriber gets a snapshot only when its 0.5 s are due (half a tick of slack),
    # so over the fast one's 16 samples it gets far fewer, spaced by its own interval.
    span = fast_times[-1] - slow_times[0]
    assert 2 <= len(slow_times) <= span / 0.45 + 1, (slow_times, fast_times)
    gaps = [b - a for a, b in zip(slow_times, slow_times[1:])]
    assert all(g >= 0.5 - 0.1 - 0.05 for g in gaps), gaps  # due time, less one tick of jitter
    assert all(b > a for a, b in zip(fast_times, fast_times[1:]))
    assert (await fast.next_snapshot()) is None  # close() ends every stream


async def test_history_ring_is_bounded_and_backfill_filters_by_age():
    devices = detect("cpu")
    sampler = TelemetrySampler(devices, list, encode_snapshot, history_seconds=3)
    try:
        assert sampler.history.maxlen == 3
        for _ in range(5):
            sampler.history.append(sampler.sample_now())
        assert len(sampler.history) == 3
        assert len(sampler.backfill(3600)) == 3 and sampler.backfill(0) == []
    finally:
        devices.close()
