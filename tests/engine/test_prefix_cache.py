"""Prefix caching: KV blocks of a prompt prefix computed once and shared (blocks.py)."""

from __future__ import annotations

import asyncio

import pytest

from musaops.daemon.engine.api import GenerationRequest, GenerationResult, SamplingParams
from musaops.daemon.engine.blocks import BlockAllocator, chain_hash

from .test_engine import GREEDY, _engine, _run

SYSTEM = "You are the network operations assistant of a telecom operator. Answer briefly. " * 4


def test_keys_chain_the_whole_prefix():
    a = chain_hash(b"", range(16))
    assert chain_hash(a, range(16, 32)) != chain_hash(chain_hash(b"", range(1, 17)), range(16, 32))
    assert chain_hash(b"", range(16)) == a and len(a) == 32


def test_allocator_shares_registered_blocks_and_evicts_the_oldest_unused_last():
    alloc = BlockAllocator(4, prefix_caching=True)
    k1, k2 = chain_hash(b"", [1] * 16), chain_hash(b"", [2] * 16)
    b1, b2 = alloc.allocate(2)
    alloc.register(b1, k1)
    alloc.register(b2, k2)
    assert alloc.match([k1, k2, chain_hash(k2, [3] * 16)]) == [b1, b2]   # a second holder of both
    alloc.free([b1, b2])
    assert alloc.num_used == 2 and alloc.num_cached == 0
    alloc.free([b2])
    alloc.free([b1])   # both unused now, b2 first: it is evicted first
    assert (alloc.num_used, alloc.num_cached, alloc.num_free) == (0, 2, 4)
    fresh = alloc.allocate(3)   # the two never-used blocks, then the oldest cached one
    assert fresh[2] == b2 and alloc.match([k2]) == [] and alloc.match([k1]) == [b1]
    with pytest.raises(RuntimeError):
        alloc.allocate(1)


def test_without_prefix_caching_nothing_is_registered():
    alloc = BlockAllocator(2)
    (b,) = alloc.allocate(1)
    alloc.register(b, chain_hash(b"", [1] * 16))
    alloc.free([b])
    assert alloc.match([chain_hash(b"", [1] * 16)]) == [] and alloc.num_cached == 0


@pytest.fixture(params=["float32", "bfloat16"])
def engines(request, llama_dir):
    """The same model with and without prefix caching (bf16: the native forward where the CPU has it)."""
    on = _engine(llama_dir, dtype=request.param)
    off = _engine(llama_dir, dtype=request.param, prefix_caching=False)
    yield on, off
    on.close()
    off.close()


async def test_a_shared_prefix_is_computed_once_and_changes_no_output(engines):
    on, off = engines
    prompts = [SYSTEM + f"Question {i}: why is cell {i} congested?" for i in range(6)]
    want = [(await _run(off, p))[0] for p in prompts]
    first = (await _run(on, prompts[0]))[0]
    hits0 = on.scheduler.prefix_hit_tokens
    rest = await asyncio.gather(*[_run(on, p) for p in prompts[1:]])
    assert [first] + [r[0] for r in rest] == want
    shared = len(on.tokenize(GenerationRequest("", prompt=SYSTEM, sampling=GREEDY))) // 16 * 16
    assert on.scheduler.prefix_hit_tokens - hits0 >= 5 * (shared - 16)
    assert off.scheduler.prefix_hit_tokens == 0
    assert on.stats().prefix_cache_hit_tokens_total == on.scheduler.prefix_hit_tokens
    assert on.stats().kv_blocks_used == 0 and on.allocator.num_cached > 0


async def test_the_same_prompt_again_recomputes_only_its_last_block(engines):
    on, _off = engines
    prompt = SYSTEM + "List the alarms of the last hour."
    n = len(on.tokenize(GenerationRequest("", prompt=prompt, sampling=GREEDY)))
    text, _result, _ = await _run(on, prompt)
    before = on.scheduler.prefix_hit_tokens
    again, result, _ = await _run(on, prompt)
    assert again == text and result.metrics.prompt_tokens == n
    assert on.scheduler.prefix_hit_tokens - before == (n - 1) // 16 * 16


async def test_requests_share_cached_prefixes_only_within_their_scope(engines):
    on, _off = engines
    prompt = SYSTEM + "Which sites lost power?"
    sp = GREEDY

    async def hits(scope: str) -> int:
        before = on.scheduler.prefix_hit_tokens
        async for item in on.generate(GenerationRequest("", prompt=prompt, sampling=sp, cache_scope=scope)):
            if isinstance(item, GenerationResult):
                return on.scheduler.prefix_hit_tokens - before
        raise AssertionError("no result")

    assert await hits("tenant-a") == 0
    assert await hits("tenant-b") == 0          # the same prompt from another scope: computed again
    assert await hits("tenant-a") > 0 and await hits("tenant-b") > 0 and await hits("") == 0


async def test_cached_blocks_give_way_to_new_requests(llama_dir):
    """A cache of 10 blocks: every distinct prompt evicts older cached prefixes as it needs
    blocks; all requests finish, and nothing stays held."""
    small = _engine(llama_dir, kv_blocks=10, max_context=160)
    try:
        sp = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
        for i in range(12):
            text, result, _ = await _run(small, f"Report {i}: " + "traffic " * (3 + i), sp)
            assert isinstance(result, GenerationResult) and result.metrics.completion_tokens == 8
        assert small.stats().kv_blocks_used == 0
        assert small.allocator.num_free == 10
        hits = small.scheduler.prefix_hit_tokens
        await _run(small, "Report 0: " + "traffic " * 3, sp)   # its blocks were evicted long ago
        assert small.scheduler.prefix_hit_tokens == hits
    finally:
        small.close()
