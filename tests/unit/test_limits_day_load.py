"""The daily quota's store read runs off the event loop, once per key and day, and a failed
read is tried again (daemon/limits.py: Limiter.load_day)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from musaops.daemon.limits import DAY_S, KeyLimits, LimitExceeded, Limiter

QUOTA = KeyLimits(daily_tokens=100)


def _limiter(read):
    return Limiter(read, wall=lambda: 30 * DAY_S + 3600.0)


def test_the_day_is_read_once_on_a_worker_thread_while_the_loop_runs():
    release = threading.Event()
    calls: list[tuple[str, int, bool]] = []

    def read(key: str, since_s: int) -> int:
        calls.append((key, since_s, threading.current_thread() is threading.main_thread()))
        assert release.wait(10), "the test never released the read"
        return 100

    lim = _limiter(read)

    async def main() -> int:
        loads = [asyncio.ensure_future(lim.load_day("team", QUOTA)) for _ in range(8)]
        while not calls:          # the read has started on its thread ...
            await asyncio.sleep(0.005)
        for _ in range(20):       # ... and the loop keeps running while it is held
            await asyncio.sleep(0.001)
        waiting = sum(not load.done() for load in loads)
        release.set()
        await asyncio.gather(*loads)
        return waiting

    assert asyncio.run(main()) == 8, "every request waits for the held read while the loop runs on"
    assert calls == [("team", 30 * DAY_S, False)], "one read for eight requests, not on the loop's thread"
    with pytest.raises(LimitExceeded) as err:      # admit finds the day loaded: 100 of 100 used
        lim.admit("team", QUOTA)
    assert err.value.code == "insufficient_quota"


def test_a_failed_read_raises_and_the_next_request_reads_again():
    answers = [OSError("database is locked"), 7]

    def read(key: str, since_s: int) -> int:
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    lim = _limiter(read)
    with pytest.raises(OSError):
        asyncio.run(lim.load_day("team", QUOTA))
    asyncio.run(lim.load_day("team", QUOTA))
    lim.admit("team", QUOTA).finish(3)
    assert answers == []


def test_keys_without_a_daily_quota_never_read():
    lim = _limiter(lambda key, since_s: pytest.fail("read without a daily quota"))
    asyncio.run(lim.load_day("team", KeyLimits(rpm=5)))
    lim.admit("team", KeyLimits(rpm=5)).finish(1)
