"""Logits and greedy parity against transformers on the same config and safetensors (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch

from musaops.daemon.engine.kv_cache import KVCache
from musaops.daemon.engine.loader import load_model, read_config
from musaops.daemon.engine.api import SamplingParams
from musaops.daemon.engine.runner import ModelRunner
from musaops.daemon.engine.scheduler import ScheduledChunk, Sequence

from .checkpoints import write_hf_checkpoint

pytestmark = pytest.mark.timeout(120)

CPU = torch.device("cpu")


def _ours(model_dir, max_positions=256):
    model = load_model(model_dir, "float32", CPU, max_positions)
    cache = KVCache(model.cfg, 32, 16, torch.float32, CPU)
    return ModelRunner(model, cache, CPU)


def _hf(model_dir):
    import transformers
    return transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _prompt(n, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (n,), generator=g).tolist()


def _all_logits(runner, ids, chunk):
    """Logits at every position, computed `chunk` tokens at a time through the paged cache."""
    table = list(range(runner.cache.num_blocks))
    out = []
    pos = 0
    while pos < len(ids):
        n = min(chunk, len(ids) - pos)
        part = Sequence("p", list(ids[:pos + n]), SamplingParams(), max_tokens=1)
        part.block_table = table
        out.append(runner.run([ScheduledChunk(part, pos, n)]))
        pos += n
    return torch.cat(out)


@pytest.mark.parametrize("arch_dir", ["llama_dir", "qwen2_dir"])
def test_last_token_logits_match_transformers(arch_dir, request):
    model_dir = request.getfixturevalue(arch_dir)
    ours, hf = _ours(model_dir), _hf(model_dir)
    ids = _prompt(40, ours.model.cfg.vocab_size)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float()
    # whole prompt at once, then chunks of 7 (prefix in cache), then token by token (decode path)
    for chunk in (40, 7, 1):
        got = _all_logits(ours, ids, chunk)
        want = ref[[min(i + chunk, 40) - 1 for i in range(0, 40, chunk)]]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch_dir", ["llama_dir", "qwen2_dir"])
def test_greedy_32_tokens_match_transformers(arch_dir, request):
    model_dir = request.getfixturevalue(arch_dir)
    ours, hf = _ours(model_dir), _hf(model_dir)
    ids = _prompt(12, ours.model.cfg.vocab_size, seed=3)
    with torch.no_grad():
        ref = hf.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                          eos_token_id=None, pad_token_id=0)[0, 12:].tolist()
    seq = Sequence("g", list(ids), SamplingParams(temperature=0), max_tokens=32)
    seq.block_table = list(range(ours.cache.num_blocks))
    chunk = ScheduledChunk(seq, 0, len(ids))
    for _ in range(32):
        logits = ours.run([chunk])
        seq.num_computed = chunk.start + chunk.length
        seq.output_ids.append(int(logits[0].argmax()))
        chunk = ScheduledChunk(seq, seq.num_tokens - 1, 1)
    assert seq.output_ids == ref


def test_llama3_rope_scaling_sharded_untied_mistral_shapes(tmp_path, demo_model_dir):
    """llama3 rope scaling through a sharded checkpoint, and Mistral's architecture name."""
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    d = write_hf_checkpoint(tmp_path / "l3", "llama", demo_model_dir, seed=4, rope_scaling=scaling,
                            max_shard_size="200KB")
    assert (d / "model.safetensors.index.json").exists()
    assert read_config(d).rope_scaling["rope_type"] == "llama3"
    m = write_hf_checkpoint(tmp_path / "mi", "mistral", demo_model_dir, seed=5)
    for model_dir in (d, m):
        ours, hf = _ours(model_dir, 512), _hf(model_dir)
        ids = _prompt(100, ours.model.cfg.vocab_size, seed=6)
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0, -1].float()
        got = _all_logits(ours, ids, 100)[-1]
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_cpu_bf16_kernel_matches_fp32_math_on_bf16_weights(llama_dir):
    """bf16 weights, fp32 compute (the AVX2 kernel) equals transformers in fp32 on the same
    bf16-rounded weights, for a decode row and for a short prefill."""
    from musaops.daemon.devices.cpu import cpu_flags
    from musaops.daemon.engine import cpu_kernels

    # Checked wherever it can run (it also runs on CPUs with native bf16, which use the
    # native forward instead): AVX2 + FMA and a C compiler.
    if not {"avx2", "fma"} <= cpu_flags() or cpu_kernels.load() is None:
        pytest.skip("the AVX2 bf16 kernel cannot run here (not x86 with AVX2 + FMA, or no C compiler)")
    model = load_model(llama_dir, "bfloat16", CPU, 256, compute_dtype=torch.float32)
    assert model.layers[0].mlp.gate_up_proj.weight.dtype == torch.bfloat16
    runner = ModelRunner(model, KVCache(model.cfg, 32, 16, torch.float32, CPU), CPU)
    hf = _hf(llama_dir)
    with torch.no_grad():
        for p in hf.parameters():   # round the weights only (not RoPE's inv_freq buffer)
            p.copy_(p.to(torch.bfloat16).float())
    ids = _prompt(30, model.cfg.vocab_size, seed=9)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float()
    for chunk in (30, 1):
        got = _all_logits(runner, ids, chunk)
        want = ref[[min(i + chunk, 30) - 1 for i in range(0, 30, chunk)]]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    w = torch.randn(1100, 64).to(torch.bfloat16)
    b = torch.randn(1100)
    for rows in (1, 7, 100, 300):   # GEMV, one tile, several tiles, widen-and-GEMM
        x = torch.randn(rows, 64)
        torch.testing.assert_close(cpu_kernels.bf16_linear(x, w, b), x @ w.float().T + b, rtol=1e-5, atol=1e-4)
