"""A stream whose consumer stopped reading may hold at most engine.stream_backlog_tokens
unread tokens: then its request ends (ERROR, "the client stopped reading"), its KV blocks
are freed and it is no longer scheduled, so other callers' completions go on as before."""

from __future__ import annotations

import asyncio
import time

import pytest

from musaops.daemon.engine import load_engine
from musaops.daemon.engine.api import (CLIENT_STOPPED_READING, DeviceTarget, EngineSpec, FinishReason,
                                       GenerationRequest, GenerationResult, SamplingParams)

pytestmark = pytest.mark.timeout(180)
NORMAL = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
LONG = SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)
BACKLOG = 32   # above NORMAL.max_tokens: a normal client can never be cut off


@pytest.fixture
def engine(llama_dir):
    e = load_engine(llama_dir, EngineSpec(dtype="float32", max_batch=24, max_context=512, kv_cache_fraction=0.02,
                                          stream_backlog_tokens=BACKLOG), DeviceTarget("cpu"))
    yield e
    e.close()


async def _completions(engine, seconds: float) -> int:
    """Requests completed by 4 normal clients, one after another each, in `seconds`."""
    done = 0
    end = time.monotonic() + seconds

    async def client(k: int) -> None:
        nonlocal done
        while time.monotonic() < end:
            items = [i async for i in engine.generate(GenerationRequest("", prompt=f"client {k} says", sampling=NORMAL))]
            assert items[-1].finish_reason is FinishReason.LENGTH
            done += 1

    await asyncio.gather(*(client(k) for k in range(4)))
    return done


async def test_never_reading_streams_end_and_do_not_starve_others(engine):
    alone = await _completions(engine, 3.0)
    stalled = [engine.generate(GenerationRequest(f"stalled{i}", prompt=f"never read {i}", sampling=LONG))
               for i in range(16)]
    firsts = [await s.__anext__() for s in stalled]   # admitted; now nobody reads them
    beside = await _completions(engine, 3.0)
    assert beside * 3 >= alone, (alone, beside)
    for first, stream in zip(firsts, stalled):
        items = [first] + [i async for i in stream]
        result = items[-1]
        assert isinstance(result, GenerationResult) and result.finish_reason is FinishReason.ERROR
        assert result.error.startswith(CLIENT_STOPPED_READING)
        unread = sum(i.tokens for i in items[1:-1])
        assert unread <= 2 * BACKLOG and result.metrics.completion_tokens < LONG.max_tokens
    assert engine.stats().kv_blocks_used == 0 and engine.stats().running == 0
