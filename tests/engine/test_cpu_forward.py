"""The native CPU forward (csrc/forward_avx512.c) against torch on the same bf16 weights.

Every test runs once per variant this CPU can run (cpu_forward.VARIANTS: the AVX512-BF16
build and the AVX512F build that widens bf16 in registers; the CI machines run both) and
needs a C compiler; where no variant runs these tests skip and the engine uses torch alone.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from musaops.daemon.devices.cpu import cpu_flags
from musaops.daemon.engine import cpu_forward
from musaops.daemon.engine.api import SamplingParams
from musaops.daemon.engine.kv_cache import KVCache
from musaops.daemon.engine.loader import load_model
from musaops.daemon.engine.runner import ModelRunner
from musaops.daemon.engine.scheduler import ScheduledChunk, Sequence

from .checkpoints import write_hf_checkpoint
from .test_engine import GREEDY, PROMPTS, _engine, _run

CPU = torch.device("cpu")

VARIANTS = [v.name for v in cpu_forward.VARIANTS if v.cpu_flags <= cpu_flags() and cpu_forward.load(v.name)]

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not VARIANTS, reason="no AVX-512 on this CPU (or no C compiler): the engine uses torch here"),
]


@pytest.fixture(autouse=True, params=VARIANTS or ["none"])
def forward_variant(request, monkeypatch) -> str:
    monkeypatch.setenv("MUSAOPS_CPU_FORWARD", request.param)
    return request.param


@pytest.fixture(scope="module")
def odd_qwen2_dir(tmp_path_factory, demo_model_dir):
    """QKV bias, three query heads on one KV head, and sizes that hit every tail path:
    hidden 66 and inter 102 (reductions not a multiple of 32 or 16), head_dim 22, and
    projections of 110 and 66 rows (not a multiple of the 4-row tile)."""
    return write_hf_checkpoint(tmp_path_factory.mktemp("odd"), "qwen2", demo_model_dir, seed=4,
                               hidden_size=66, num_attention_heads=3, num_key_value_heads=1,
                               intermediate_size=102, num_hidden_layers=3)


@pytest.fixture(scope="module")
def head_dim_128_dir(tmp_path_factory, demo_model_dir):
    """Real models' head size (128): attention's full-width loops, 4 query heads per KV head."""
    return write_hf_checkpoint(tmp_path_factory.mktemp("hd128"), "llama", demo_model_dir, seed=5,
                               hidden_size=512, num_attention_heads=4, num_key_value_heads=1,
                               intermediate_size=1024, num_hidden_layers=2)


@pytest.fixture(scope="module")
def wide_group_dir(tmp_path_factory, demo_model_dir):
    """32 query heads on one KV head: a query tile of one token, head size 16."""
    return write_hf_checkpoint(tmp_path_factory.mktemp("group32"), "qwen2", demo_model_dir, seed=6,
                               hidden_size=512, num_attention_heads=32, num_key_value_heads=1,
                               intermediate_size=256, num_hidden_layers=2)


def _runner(model_dir, dtype="bfloat16", native=True, blocks=64):
    model = load_model(model_dir, dtype, CPU, 512)
    if dtype == "float32":   # the reference: fp32 math on the bf16-rounded weights
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    cache = KVCache(model.cfg, blocks, 16, model.compute_dtype, CPU)
    runner = ModelRunner(model, cache, CPU)
    assert (runner.native is not None) == (dtype == "bfloat16")
    if not native:
        runner.native = None
    return runner


def _seq(ids, first_block, blocks=8):
    seq = Sequence("t", list(ids), SamplingParams(), max_tokens=1)
    seq.block_table = list(range(first_block, first_block + blocks))
    return seq


def _prompt(n, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (n,), generator=g).tolist()


def _mixed_steps(runner):
    """Three steps mixing prefill chunks (with and without a cached prefix) and decodes;
    returns every sampled row's logits."""
    vocab = runner.model.cfg.vocab_size
    a = _seq(_prompt(40, vocab, 1), 0)
    b = _seq(_prompt(23, vocab, 2), 8)
    c = _seq(_prompt(70, vocab, 3), 16)
    out = [runner.run([ScheduledChunk(a, 0, 40), ScheduledChunk(c, 0, 33)])]   # c: first chunk only
    a.prompt_ids.append(7)
    out.append(runner.run([ScheduledChunk(a, 40, 1), ScheduledChunk(b, 0, 23), ScheduledChunk(c, 33, 37)]))
    for s in (a, b, c):
        s.prompt_ids.append(9)
    out.append(runner.run([ScheduledChunk(a, 41, 1), ScheduledChunk(b, 23, 1), ScheduledChunk(c, 70, 1)]))
    return torch.cat(out)


@pytest.mark.parametrize("which", ["llama_dir", "odd_qwen2_dir", "head_dim_128_dir", "wide_group_dir"])
def test_native_is_as_close_to_fp32_as_torch_bf16(which, request):
    model_dir = request.getfixturevalue(which)
    with torch.inference_mode():
        ref = _mixed_steps(_runner(model_dir, "float32"))
        native = _mixed_steps(_runner(model_dir))
        torch_bf16 = _mixed_steps(_runner(model_dir, native=False))
    assert native.shape == ref.shape == (7, ref.shape[1])
    err_native = (native - ref).abs().max().item()
    err_torch = (torch_bf16 - ref).abs().max().item()
    # bf16 rounds activations at every layer: both paths sit near the fp32 result, and the
    # native one no further from it than torch's own bf16 kernels (with a little slack).
    assert err_native <= 1.5 * err_torch + 0.02, (err_native, err_torch)
    assert torch.nn.functional.cosine_similarity(native, ref, dim=-1).min() > 0.999
    assert (native.argmax(-1) == ref.argmax(-1)).float().mean() >= 6 / 7


def test_long_context_stays_as_close_to_fp32_as_torch_bf16(head_dim_128_dir):
    """400 tokens (25 key blocks, many query tiles) prefilled in chunks of 160, then two
    decodes: every sampled row against the fp32 reference, as above."""
    ids = _prompt(402, 500, 8)

    def steps(runner):
        seq = _seq(ids[:400], 0, blocks=26)
        out = [runner.run([ScheduledChunk(seq, a, min(160, 400 - a))]) for a in range(0, 400, 160)]
        for p in (400, 401):
            seq.prompt_ids.append(ids[p])
            out.append(runner.run([ScheduledChunk(seq, p, 1)]))
        return torch.cat(out)

    with torch.inference_mode():
        ref = steps(_runner(head_dim_128_dir, "float32", blocks=32))
        native = steps(_runner(head_dim_128_dir, blocks=32))
        torch_bf16 = steps(_runner(head_dim_128_dir, native=False, blocks=32))
    assert native.shape == ref.shape == (3, ref.shape[1])
    err_native = (native - ref).abs().max().item()
    err_torch = (torch_bf16 - ref).abs().max().item()
    assert err_native <= 1.5 * err_torch + 0.02, (err_native, err_torch)
    assert torch.nn.functional.cosine_similarity(native, ref, dim=-1).min() > 0.999


def test_a_row_does_not_depend_on_its_batch(llama_dir):
    """Bit for bit: the same decode alone, and beside other decodes and a prefill chunk."""
    runner = _runner(llama_dir)
    vocab = runner.model.cfg.vocab_size
    ids = _prompt(30, vocab, 5)
    with torch.inference_mode():
        alone = _seq(ids, 0)
        runner.run([ScheduledChunk(alone, 0, 30)])
        alone.prompt_ids.append(11)
        want = runner.run([ScheduledChunk(alone, 30, 1)])
        crowd = [_seq(_prompt(10 + 7 * i, vocab, 10 + i), 8 * (i + 1)) for i in range(5)]
        again = _seq(ids, 48)
        runner.run([ScheduledChunk(again, 0, 30)] + [ScheduledChunk(s, 0, len(s.prompt_ids) - 1) for s in crowd])
        again.prompt_ids.append(11)
        got = runner.run([ScheduledChunk(s, len(s.prompt_ids) - 1, 1) for s in crowd[:3]]
                         + [ScheduledChunk(again, 30, 1)]
                         + [ScheduledChunk(s, len(s.prompt_ids) - 1, 1) for s in crowd[3:]])
    assert torch.equal(got[3], want[0])


@pytest.mark.parametrize("which", ["llama_dir", "odd_qwen2_dir"])
def test_a_prompt_whole_in_pieces_or_token_by_token_gives_the_same_logits(which, request):
    """Attention groups a chunk's consecutive tokens into query tiles that share each key
    and value they load; a token's arithmetic must not depend on the tile it lands in. The
    same 45-token prompt as one chunk, as chunks of 13 and 32 (tiles cut at other tokens)
    and one token per step (tiles of one): the last token's logits are equal bit for bit."""
    runner = _runner(request.getfixturevalue(which))
    ids = _prompt(45, runner.model.cfg.vocab_size, 7)
    with torch.inference_mode():
        whole = runner.run([ScheduledChunk(_seq(ids, 0), 0, 45)])
        pieces = _seq(ids, 8)
        runner.run([ScheduledChunk(pieces, 0, 13)])
        split = runner.run([ScheduledChunk(pieces, 13, 32)])
        single = _seq(ids, 16)
        for p in range(44):
            runner.run([ScheduledChunk(single, p, 1)])
        last = runner.run([ScheduledChunk(single, 44, 1)])
    assert torch.equal(whole, split)
    assert torch.equal(whole, last)


def test_a_step_longer_than_one_call_equals_consecutive_steps(llama_dir):
    """300 prompt tokens run as two native calls inside one step; the result is the same as
    two steps of 256 and 44 tokens, bit for bit."""
    assert cpu_forward.MAX_TOKENS < 300
    ids = _prompt(300, 500, 6)
    with torch.inference_mode():
        one = _runner(llama_dir, blocks=32)
        got = one.run([ScheduledChunk(_seq(ids, 0, 20), 0, 300)])
        two = _runner(llama_dir, blocks=32)
        seq = _seq(ids, 0, 20)
        assert two.run([ScheduledChunk(seq, 0, 256)]).shape[0] == 0   # no row samples yet
        want = two.run([ScheduledChunk(seq, 256, 44)])
    assert torch.equal(got, want)


def test_out_of_vocabulary_token_is_refused_not_read(llama_dir):
    runner = _runner(llama_dir)
    bad = _seq([5, runner.model.cfg.vocab_size + 3], 0)
    with pytest.raises(ValueError, match="vocabulary"), torch.inference_mode():
        runner.run([ScheduledChunk(bad, 0, 2)])


def test_the_variant_asked_for_is_the_one_that_runs(llama_dir, forward_variant):
    assert _runner(llama_dir).native.variant == forward_variant


def test_turned_off_by_environment(llama_dir, monkeypatch):
    monkeypatch.setenv("MUSAOPS_CPU_FORWARD", "0")
    model = load_model(llama_dir, "bfloat16", CPU, 64)
    assert ModelRunner(model, KVCache(model.cfg, 8, 16, torch.bfloat16, CPU), CPU).native is None


async def test_bf16_engine_same_tokens_alone_in_a_batch_and_after_preemption(llama_dir):
    engine = _engine(llama_dir, dtype="bfloat16")
    small = _engine(llama_dir, dtype="bfloat16", kv_blocks=10, max_context=160)
    try:
        assert engine.runner.native is not None
        alone = [(await _run(engine, p))[0] for p in PROMPTS[:4]]
        batch = await asyncio.gather(*[_run(engine, p) for p in PROMPTS])
        assert [b[0] for b in batch[:4]] == alone
        assert all(r.metrics.completion_tokens == GREEDY.max_tokens for _t, r, _d in batch)
        squeezed = await asyncio.gather(*[_run(small, p) for p in PROMPTS[:8]])
        assert small.stats().preemptions_total > 0
        assert [s[0] for s in squeezed] == [b[0] for b in batch[:8]]
    finally:
        engine.close()
        small.close()


def test_close_drops_the_native_view_of_weights_and_cache(llama_dir):
    import gc
    import weakref

    engine = _engine(llama_dir, dtype="bfloat16", kv_blocks=64)
    assert engine.runner.native is not None
    model, storage = weakref.ref(engine.model), weakref.ref(engine.cache.storage)
    engine.close()
    gc.collect()
    assert model() is None and storage() is None


def test_a_forked_child_runs_steps_with_a_team_of_its_own(llama_dir):
    """The team's threads do not survive fork(); a child that steps starts a new team."""
    import multiprocessing

    runner = _runner(llama_dir)
    ids = _prompt(20, 500, 7)
    with torch.inference_mode():
        want = runner.run([ScheduledChunk(_seq(ids, 0), 0, 20)])   # the parent's team exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        with torch.inference_mode():
            queue.put(runner.run([ScheduledChunk(_seq(ids, 8), 0, 20)]).tolist())

    proc = ctx.Process(target=child)
    proc.start()
    got = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert torch.equal(torch.tensor(got), want)
