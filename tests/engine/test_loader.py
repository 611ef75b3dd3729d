"""Loader failures name the tensor or file at fault; tokenizer and chat template load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from musaops.daemon.engine.api import LoadError
from musaops.daemon.engine.loader import load_model
from musaops.daemon.engine.tokenizer import IncrementalDetokenizer, Tokenizer

CPU = torch.device("cpu")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_wrong_shape_names_the_tensor(tmp_path, llama_dir):
    d = _copy(llama_dir, tmp_path / "m")
    w = load_file(d / "model.safetensors")
    w["model.layers.1.mlp.down_proj.weight"] = torch.zeros(64, 100)
    save_file(w, d / "model.safetensors")
    with pytest.raises(LoadError, match=r"model\.layers\.1\.mlp\.down_proj\.weight.*\(64, 100\)"):
        load_model(d, "float32", CPU, 64)


def test_missing_tensor_names_it(tmp_path, llama_dir):
    d = _copy(llama_dir, tmp_path / "m")
    w = load_file(d / "model.safetensors")
    del w["model.layers.0.self_attn.k_proj.weight"]
    save_file(w, d / "model.safetensors")
    with pytest.raises(LoadError, match=r"model\.layers\.0\.self_attn\.k_proj\.weight is missing"):
        load_model(d, "float32", CPU, 64)


def test_corrupt_weights_and_bad_config(tmp_path, llama_dir):
    d = _copy(llama_dir, tmp_path / "m")
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LoadError, match="could not read weights"):
        load_model(d, "float32", CPU, 64)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="not supported"):
        load_model(d, "float32", CPU, 64)


def test_dtype_and_progress(llama_dir):
    seen = []
    m = load_model(llama_dir, "bfloat16", CPU, 64, progress=lambda *a: seen.append(a))
    assert m.embed_tokens.weight.dtype == torch.bfloat16
    assert seen[-1][1] == seen[-1][2] == sum(p.nbytes for p in m.parameters())


def test_chat_template_and_utf8_safe_detokenisation(demo_model_dir):
    tok = Tokenizer(demo_model_dir)
    text = tok.apply_chat_template([("user", "hi")])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode("naïve 日本語 ok")
    detok = IncrementalDetokenizer(tok, [])
    deltas = [detok.add(i) for i in ids]
    assert "".join(deltas) + detok.flush() == "naïve 日本語 ok"
    assert all("\ufffd" not in d for d in deltas)
