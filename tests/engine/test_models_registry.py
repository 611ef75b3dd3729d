"""The architecture registry: unknown architectures are refused with a sentence everywhere."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from musaops.daemon.engine import cpu_forward, models
from musaops.daemon.engine.api import LoadError
from musaops.daemon.engine.loader import load_model, read_config

CPU = torch.device("cpu")
SENTENCE = ("architecture GemmaForCausalLM is not supported by this engine "
            "(supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)")


def _with_config(src, dst, **changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_lookup_by_hf_and_gguf_names():
    assert models.by_hf_name("MistralForCausalLM") is models.by_gguf_name("llama")
    assert models.by_hf_name("Qwen2ForCausalLM") is models.by_gguf_name("qwen2")
    assert models.by_hf_name("GemmaForCausalLM") is None and models.by_gguf_name("gemma") is None
    assert all(a.native_cpu for a in models.FAMILIES)


def test_unknown_architecture_is_refused_by_the_loader(tmp_path, llama_dir):
    d = _with_config(llama_dir, tmp_path / "gemma", architectures=["GemmaForCausalLM"])
    with pytest.raises(LoadError) as err:
        read_config(d)
    assert str(err.value) == SENTENCE
    with pytest.raises(models.UnsupportedArchitecture, match="model_type 'gemma'"):
        models.config_from_hf({"model_type": "gemma"})


def test_registry_map_matches_the_checkpoint(llama_dir, qwen2_dir):
    """Every tensor the registry asks for is in the checkpoint with that shape, and the
    parameter count it implies is what the files hold (Llama untied; Qwen2 tied, with biases)."""
    from safetensors import safe_open

    for d in (llama_dir, qwen2_dir):
        cfg = read_config(d)
        arch = models.by_hf_name(cfg.architecture)
        with safe_open(str(d / "model.safetensors"), framework="pt") as sf:
            shapes = {n: tuple(sf.get_slice(n).get_shape()) for n in sf.keys()}
        slots = arch.weights(cfg)
        assert {n: s.shape for n, s in slots.items()} == {n: shapes[n] for n in slots}
        assert arch.parameters(cfg) == sum(torch.Size(s).numel() for s in shapes.values())


def test_absurd_sizes_are_refused_before_allocating(tmp_path, llama_dir):
    d = _with_config(llama_dir, tmp_path / "huge", vocab_size=10**9, hidden_size=10**6)
    with pytest.raises(LoadError, match=r"huge needs [\d,.]+ GiB for its weights in float32 "
                                        r"\(config.json: vocab_size 1,000,000,000, hidden_size 1,000,000, "
                                        r"2 layers\) but cpu has [\d,.]+ GiB free"):
        load_model(d, "float32", CPU, 64)


def test_native_forward_refuses_an_architecture_not_registered_for_it(llama_dir, monkeypatch):
    cfg = read_config(llama_dir)
    assert cpu_forward.refusal(cfg) == ""
    gemma = dataclasses.replace(cfg, architecture="GemmaForCausalLM")
    assert cpu_forward.refusal(gemma) == "the native CPU forward does not compute architecture 'GemmaForCausalLM'"
    # a registered family whose maths the C file does not do
    llama = models.by_hf_name("LlamaForCausalLM")
    monkeypatch.setattr(models, "_BY_HF", {**models._BY_HF,
                                           "LlamaForCausalLM": dataclasses.replace(llama, native_cpu=False)})
    assert "does not compute architecture 'LlamaForCausalLM'" in cpu_forward.refusal(cfg)
    model = load_model(llama_dir, "bfloat16", CPU, 64)
    from musaops.daemon.engine.kv_cache import KVCache

    cache = KVCache(cfg, 4, 16, torch.bfloat16, CPU)
    monkeypatch.setenv("MUSAOPS_CPU_FORWARD", "avx512")
    assert cpu_forward.for_model(model, cache, CPU) is None
    with pytest.raises(ValueError, match="does not compute architecture 'LlamaForCausalLM'"):
        cpu_forward.CpuForward(None, model, cache)
