"""The engine end to end on the CPU: batching invariance, preemption, seeds, stops, cancel."""

from __future__ import annotations

import asyncio

import pytest

from musaops.daemon.engine import load_engine
from musaops.daemon.engine.api import (DeviceTarget, EngineSpec, FinishReason, GenerationRequest,
                                       GenerationResult, InvalidRequestError, QueueFullError,
                                       SamplingParams, TextDelta)

pytestmark = pytest.mark.timeout(120)

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
PROMPTS = [("The quick brown fox jumps over the lazy dog. " * (1 + i % 5))[: 10 + 13 * i] for i in range(16)]


def _engine(model_dir, **kw):
    spec = dict(dtype="float32", max_batch=16, max_context=512, kv_cache_fraction=0.01,
                prefill_token_budget=64)
    spec.update(kw)
    return load_engine(model_dir, EngineSpec(**spec), DeviceTarget("cpu"))


async def _run(engine, prompt, sampling=GREEDY, rid=""):
    text, deltas = "", []
    async for item in engine.generate(GenerationRequest(rid, prompt=prompt, sampling=sampling)):
        if isinstance(item, TextDelta):
            text += item.text
            deltas.append(item.text)
        else:
            return text, item, deltas
    raise AssertionError("stream ended without a result")


@pytest.fixture
def engine(llama_dir):
    e = _engine(llama_dir)
    yield e
    e.close()


async def test_greedy_identical_alone_and_in_batch_of_16(engine):
    alone = [(await _run(engine, p))[0] for p in PROMPTS[:4]]
    batch = await asyncio.gather(*[_run(engine, p) for p in PROMPTS])
    assert [b[0] for b in batch[:4]] == alone
    for text, result, _ in batch:
        assert result.finish_reason is FinishReason.LENGTH
        assert result.metrics.completion_tokens == 24
    assert engine.stats().kv_blocks_used == 0
    assert engine.stats().requests_total == 20


async def test_streams_wake_their_event_loop_once_per_step_not_once_per_token(engine):
    """The engine thread hands a step's items to an event loop in one call (each call is a
    write to the loop's self-pipe): 16 streams of 24 tokens cost about one wake-up per step
    plus the tokenising threads' own, not one per token."""
    loop = asyncio.get_running_loop()
    wakeups = 0
    plain = loop.call_soon_threadsafe

    def counted(*args, **kwargs):
        nonlocal wakeups
        wakeups += 1
        return plain(*args, **kwargs)

    loop.call_soon_threadsafe = counted
    try:
        steps0 = engine.stats().steps_total
        batch = await asyncio.gather(*[_run(engine, p) for p in PROMPTS])
    finally:
        del loop.call_soon_threadsafe
    tokens = sum(r.metrics.completion_tokens for _t, r, _d in batch)
    steps = engine.stats().steps_total - steps0
    assert tokens == 16 * 24 and steps < tokens / 4
    assert wakeups <= steps + 2 * len(PROMPTS) + 4, (wakeups, steps)


async def test_a_consumer_that_falls_behind_gets_the_waiting_deltas_as_one(engine):
    """Nothing is lost or reordered when deltas are merged: a stream read only after the
    engine has finished gets one delta with all the text, then the result."""
    want, _result, deltas = await _run(engine, PROMPTS[2])
    assert len(deltas) > 5
    stream = engine.generate(GenerationRequest("late", prompt=PROMPTS[2], sampling=GREEDY))
    first = await stream.__anext__()        # the request is in; now stop reading a while
    while engine.stats().running or engine.stats().waiting:
        await asyncio.sleep(0.01)
    items = [first] + [item async for item in stream]
    assert isinstance(items[-1], GenerationResult) and len(items) <= 3
    assert "".join(i.text for i in items[:-1]) == want
    assert sum(i.tokens for i in items[:-1]) == items[-1].metrics.completion_tokens == 24


async def test_identical_with_and_without_preemption(llama_dir, engine):
    want = await asyncio.gather(*[_run(engine, p) for p in PROMPTS[:8]])
    # 10 blocks of 16 tokens cannot hold eight sequences of ~60 tokens: preemption must happen
    small = _engine(llama_dir, kv_blocks=10, max_context=160)
    try:
        got = await asyncio.gather(*[_run(small, p) for p in PROMPTS[:8]])
        assert small.stats().preemptions_total > 0
        assert small.stats().kv_blocks_used == 0
    finally:
        small.close()
    assert [g[0] for g in got] == [w[0] for w in want]
    assert all(g[1].finish_reason is FinishReason.LENGTH for g in got)


async def test_seeded_sampling_reproducible_in_any_batch(engine):
    sp = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=1234, max_tokens=20, ignore_eos=True,
                        repetition_penalty=1.1, frequency_penalty=0.2, presence_penalty=0.1)
    first = (await _run(engine, PROMPTS[3], sp))[0]
    crowd = await asyncio.gather(*[_run(engine, p, sp if i == 5 else GREEDY) for i, p in
                                   enumerate([PROMPTS[i] for i in (0, 1, 2, 4, 6)] + [PROMPTS[3]])])
    assert crowd[5][0] == first
    other = (await _run(engine, PROMPTS[3], SamplingParams(temperature=0.9, seed=99, max_tokens=20,
                                                           ignore_eos=True)))[0]
    assert other != first


async def test_stop_string_across_token_boundary(engine):
    text, _, deltas = await _run(engine, PROMPTS[2])
    # a stop string made of the end of one delta and the start of the next
    k = next(i for i in range(3, len(deltas) - 1) if len(deltas[i]) >= 2 and len(deltas[i + 1]) >= 2)
    stop = deltas[k][-2:] + deltas[k + 1][:2]
    cut = text.index(stop)
    got, result, got_deltas = await _run(engine, PROMPTS[2], SamplingParams(
        temperature=0, max_tokens=24, ignore_eos=True, stop=("never-appears", stop)))
    assert got == text[:cut]
    assert result.finish_reason is FinishReason.STOP and result.stop == stop
    assert "".join(got_deltas) == got


async def test_cancel_frees_blocks_within_one_step(engine):
    gen = engine.generate(GenerationRequest("c", prompt=PROMPTS[5], sampling=SamplingParams(
        temperature=0, max_tokens=400, ignore_eos=True)))
    for _ in range(3):
        assert isinstance(await gen.__anext__(), TextDelta)
    assert engine.stats().kv_blocks_used > 0
    steps = engine.stats().steps_total
    await gen.aclose()
    for _ in range(3000):   # a 30 s deadline: the engine thread may be starved on a loaded machine
        if engine.stats().kv_blocks_used == 0:
            break
        await asyncio.sleep(0.01)
    s = engine.stats()
    assert s.kv_blocks_used == 0 and s.running == 0
    assert s.steps_total <= steps + 1


async def test_failed_step_fails_its_requests_and_engine_keeps_serving(engine, monkeypatch):
    real = engine.runner.run
    calls = {"n": 0}

    def flaky(chunks):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected device fault")
        return real(chunks)

    monkeypatch.setattr(engine.runner, "run", flaky)
    text, result, _ = await _run(engine, PROMPTS[1])
    assert result.finish_reason is FinishReason.ERROR and "injected device fault" in result.error
    assert engine.stats().kv_blocks_used == 0 and engine.stats().requests_failed == 1
    text, result, _ = await _run(engine, PROMPTS[1])
    assert result.finish_reason is FinishReason.LENGTH


async def test_a_poisoned_request_fails_alone_among_running_ones(engine):
    """Sampling values no validation would pass (a NaN temperature) fail that request only;
    the smallest positive temperature and penalty run; the greedy requests sharing their
    steps give what they give alone."""
    alone = [(await _run(engine, p))[0] for p in PROMPTS[:4]]
    long = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    tiny = SamplingParams(temperature=1.4e-45, repetition_penalty=1.4e-45, seed=5, max_tokens=24, ignore_eos=True)
    nan = SamplingParams(temperature=float("nan"), seed=5, max_tokens=24, ignore_eos=True)
    runs = await asyncio.gather(*[_run(engine, p, long) for p in PROMPTS[:4]],
                                _run(engine, PROMPTS[5], tiny), _run(engine, PROMPTS[6], nan))
    assert [r[0] for r in runs[:4]] == alone
    assert all(r[1].finish_reason is FinishReason.LENGTH for r in runs[:5])
    failed = runs[5][1]
    assert failed.finish_reason is FinishReason.ERROR
    assert failed.error.startswith("sampling failed for this request:") and "no finite distribution" in failed.error
    assert engine.stats().requests_failed == 1 and engine.stats().kv_blocks_used == 0


async def test_bad_requests_raise_before_streaming(llama_dir, engine):
    with pytest.raises(InvalidRequestError, match="empty"):
        await _run(engine, "")
    with pytest.raises(InvalidRequestError, match="context is 512 tokens"):
        await _run(engine, "word " * 600)
    full = _engine(llama_dir, max_queue=0)
    try:
        with pytest.raises(QueueFullError):
            await _run(full, "hello")
    finally:
        full.close()


async def test_max_tokens_clamped_to_context_and_eos(demo_model_dir):
    e = _engine(demo_model_dir, max_context=40)
    try:
        text, result, _ = await _run(e, "Hello, world!", SamplingParams(temperature=0, max_tokens=500,
                                                                        ignore_eos=True))
        assert result.finish_reason is FinishReason.LENGTH
        assert result.metrics.prompt_tokens + result.metrics.completion_tokens == 40
        m = result.metrics
        assert 0 <= m.queue_s <= m.ttft_s <= m.total_s and len(m.itl_s) == m.completion_tokens - 1
    finally:
        e.close()


async def test_drain_and_close(engine):
    task = asyncio.create_task(_run(engine, PROMPTS[0], SamplingParams(temperature=0, max_tokens=5000,
                                                                       ignore_eos=True)))
    while engine.stats().running == 0:
        await asyncio.sleep(0.01)
    drained, cancelled = await engine.drain(0.05)
    assert (drained, cancelled) == (0, 1)
    text, result, _ = await task
    assert result.finish_reason is FinishReason.CANCELLED
    from musaops.daemon.engine.api import EngineClosedError
    with pytest.raises(EngineClosedError):
        await _run(engine, "x")


def test_close_releases_weights_and_cache(llama_dir):
    import gc
    import weakref

    import psutil

    e = _engine(llama_dir, kv_blocks=4096)   # 4096 blocks x 16 tokens: a 64 MiB fp32 cache
    model, storage = weakref.ref(e.model), weakref.ref(e.cache.storage)
    assert e.info.kv_cache_bytes == 4096 * 16 * 2 * 2 * 2 * 16 * 4
    proc = psutil.Process()
    before = proc.memory_info().rss
    e.close()
    gc.collect()
    assert model() is None and storage() is None
    assert before - proc.memory_info().rss > 0.8 * e.info.kv_cache_bytes


async def test_a_burst_below_max_queue_is_admitted_whole_and_one_above_is_refused(llama_dir):
    """Requests being tokenised count against max_queue: a burst of 256 at once (more than the
    prompt pool's threads many times over) is admitted whole, and the queue's bound holds."""
    from musaops.daemon.engine.api import QueueFullError

    e = _engine(llama_dir, max_queue=256)
    try:
        short = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
        results = await asyncio.gather(*(_run(e, f"burst {i}", short) for i in range(256)))
        assert [r.finish_reason for _, r, _ in results] == [FinishReason.LENGTH] * 256
        over = await asyncio.gather(*(_run(e, f"over {i}", short) for i in range(300)),
                                    return_exceptions=True)
        refused = [x for x in over if isinstance(x, QueueFullError)]
        assert refused and all(isinstance(x, (tuple, QueueFullError)) for x in over)
        assert len(over) - len(refused) <= 256 + e.info.max_batch
    finally:
        e.close()
