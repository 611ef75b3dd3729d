"""GGUF files written here with gguf.GGUFWriter: every supported tensor type dequantizes to
the source within its quantization error, the model loads and generates, llama.cpp's Q/K
permutation is undone (same logits as the safetensors checkpoint it came from), and broken
files are listed with a sentence.

gguf.quants can quantize F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 but not the
K-quants (NotImplementedError in gguf 0.19): for Q4_K, Q5_K and Q6_K the test writes
random blocks with sane scales and checks the loaded weights against gguf.quants'
dequantization of the same bytes.
"""

from __future__ import annotations

import asyncio
import pathlib

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from musaops.daemon.demo_model import write_demo_model  # noqa: E402
from musaops.daemon.engine.api import DeviceTarget, EngineSpec, GenerationRequest, GenerationResult, SamplingParams  # noqa: E402
from musaops.daemon.engine.gguf_loader import dequantized, model_path  # noqa: E402
from musaops.daemon.engine.gguf_meta import GGUFError, inspect_gguf  # noqa: E402
from musaops.daemon.repository import ModelRepository  # noqa: E402

pytestmark = pytest.mark.timeout(300)
Q = gguf.GGMLQuantizationType
# Worst-case absolute error per element, as a fraction of the row's largest magnitude.
TOLERANCE = {"F32": 0.0, "F16": 1e-3, "BF16": 8e-3, "Q8_0": 1e-2, "Q5_0": 7e-2, "Q5_1": 7e-2,
             "Q4_0": 0.15, "Q4_1": 0.15}
K_QUANTS = ("Q4_K", "Q5_K", "Q6_K")


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _random_k_blocks(rows: int, cols: int, qtype, rng) -> np.ndarray:
    """Random K-quant bytes whose fp16 scales are small and finite (the quantized values are
    random; the loader must reproduce gguf.quants.dequantize of them exactly)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    scale = np.array([0.001], dtype=np.float16).view(np.uint8)
    if qtype in (Q.Q4_K, Q.Q5_K):        # d, dmin first
        raw[..., 0:2] = scale
        raw[..., 2:4] = scale
    else:                                # Q6_K: d last, int8 scales before it
        raw[..., -2:] = scale
    return raw.reshape(rows, -1)


def write_gguf(hf_dir: pathlib.Path, out: pathlib.Path, qtype: str, rng=None) -> dict[str, np.ndarray]:
    """The demo checkpoint in `hf_dir` as a llama GGUF at `qtype` (norms stay F32, as
    llama.cpp writes them); returns the HF-layout source weights (dequantized reference for
    K-quants)."""
    import json

    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    cfg = json.loads((hf_dir / "config.json").read_text())
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    tcfg = json.loads((hf_dir / "tokenizer_config.json").read_text())
    weights = load_file(str(hf_dir / "model.safetensors"))
    rng = rng or np.random.default_rng(0)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_vocab_size(cfg["vocab_size"])
    hf_tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    vocab = sorted(hf_tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    specials = {t["content"] for t in tok["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in specials else 1 for t, _ in vocab])
    merges = tok["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"][0])
    w.add_add_bos_token(False)
    w.add_chat_template(tcfg["chat_template"])
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    reference = {}
    for hf_name, data in weights.items():
        gname = "output.weight" if hf_name == "lm_head.weight" else name_map.get_name(hf_name, try_suffixes=(".weight",))
        data = data.astype(np.float32)
        stored = data
        if hf_name.endswith("q_proj.weight"):
            stored = _permute(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            stored = _permute(data, kv_heads)
        if data.ndim == 1 or qtype == "F32":
            w.add_tensor(gname, stored)
            reference[hf_name] = data
            continue
        qt = Q[qtype]
        if qtype in K_QUANTS:
            raw = _random_k_blocks(stored.shape[0], stored.shape[1], qt, rng)
            deq = gguf.quants.dequantize(raw, qt)
            # the reference in HF layout: undo the permutation of what was written
            if hf_name.endswith("q_proj.weight"):
                deq = _unpermute(deq, heads)
            elif hf_name.endswith("k_proj.weight"):
                deq = _unpermute(deq, kv_heads)
            reference[hf_name] = deq
        else:
            raw = gguf.quants.quantize(stored, qt)
            reference[hf_name] = data
        w.add_tensor(gname, raw, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return reference


def _unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    # hidden 256 so every row is a whole number of K-quant super-blocks (256 values)
    import musaops.daemon.demo_model as dm
    shape = dict(dm.SHAPE)
    dm.SHAPE.update(hidden_size=256, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2)
    try:
        return write_demo_model(tmp_path_factory.mktemp("hf") / "tiny")
    finally:
        dm.SHAPE.clear()
        dm.SHAPE.update(shape)


@pytest.mark.parametrize("qtype", [*TOLERANCE, *K_QUANTS])
def test_dequantized_weights_match_the_source(hf_dir, tmp_path, qtype):
    out = tmp_path / f"tiny.{qtype}.gguf"
    ref = write_gguf(hf_dir, out, qtype)
    g = inspect_gguf(out)
    mm = np.memmap(out, dtype=np.uint8, mode="r")
    assert g.quantization in (qtype, "") or qtype == "F32"
    for hf_name, src in ref.items():
        got = dequantized(g, hf_name, mm).astype(np.float32)
        assert got.shape == src.shape, hf_name
        if qtype in K_QUANTS or src.ndim == 1:
            np.testing.assert_array_equal(got, src, err_msg=hf_name)
        else:
            scale = np.abs(src).max(axis=-1, keepdims=True)
            assert np.all(np.abs(got - src) <= TOLERANCE[qtype] * scale + 1e-7), hf_name


@pytest.mark.parametrize("qtype", [*TOLERANCE, *K_QUANTS])
def test_loaded_parameters_are_the_dequantized_tensors(hf_dir, tmp_path, qtype, monkeypatch):
    """The loader's slice-by-slice fill (small slices, so several per tensor) puts exactly
    `dequantized()` of every tensor into its parameter rows, Q/K un-permuted."""
    from musaops.daemon.engine import gguf_loader

    monkeypatch.setattr(gguf_loader, "ROWS_BYTES", 1000)
    monkeypatch.setattr(gguf_loader, "COPY_ELEMENTS", 100)
    out = tmp_path / f"tiny.{qtype}.gguf"
    write_gguf(hf_dir, out, qtype)
    g = inspect_gguf(out)
    mm = np.memmap(out, dtype=np.uint8, mode="r")
    model = gguf_loader.load_gguf_model(g, "float32", torch.device("cpu"), 64)
    for hf_name, slot in g.architecture.weights(g.config).items():
        got = model.get_parameter(slot.param)[slot.row:slot.row + slot.shape[0]].numpy()
        np.testing.assert_array_equal(got, dequantized(g, hf_name, mm).astype(np.float32), err_msg=hf_name)


def _load(path, dtype="float32"):
    from musaops.daemon.engine import load_engine

    return load_engine(path, EngineSpec(dtype=dtype, max_batch=2, max_context=128, kv_cache_fraction=0.05),
                       DeviceTarget("cpu", ()))


def _greedy(engine, prompt, n=12) -> str:
    async def run():
        text = []
        async for item in engine.generate(GenerationRequest(
                request_id="t", prompt=prompt, sampling=SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True))):
            if not isinstance(item, GenerationResult):
                text.append(item.text)
        return "".join(text)
    return asyncio.run(run())


def test_f32_gguf_generates_what_the_safetensors_checkpoint_generates(hf_dir, tmp_path):
    """F32 is lossless: same weights after the Q/K un-permutation, so the same greedy text."""
    out = tmp_path / "tiny.f32.gguf"
    write_gguf(hf_dir, out, "F32")
    a, b = _load(hf_dir), _load(out)
    try:
        for prompt in ("Hello, world!", "The quick brown fox"):
            assert _greedy(a, prompt) == _greedy(b, prompt)
        assert b.tokenizer.encode("Hello, world!") == a.tokenizer.encode("Hello, world!")
        assert b.tokenizer.apply_chat_template([("user", "hi")]) == a.tokenizer.apply_chat_template([("user", "hi")])
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_K", "Q6_K", "BF16"])
def test_quantized_gguf_deploys_in_bf16(hf_dir, tmp_path, qtype):
    out = tmp_path / f"tiny.{qtype}.gguf"
    write_gguf(hf_dir, out, qtype)
    engine = _load(out, "bfloat16")
    try:
        assert engine.info.dtype == "bfloat16"
        assert len(_greedy(engine, "Hello", 4)) > 0
    finally:
        engine.close()


def test_repository_lists_gguf_files_and_folders(hf_dir, tmp_path):
    repo = tmp_path / "repo"
    (repo / "folder").mkdir(parents=True)
    write_gguf(hf_dir, repo / "single.Q8_0.gguf", "Q8_0")
    write_gguf(hf_dir, repo / "folder" / "m.Q4_1.gguf", "Q4_1")
    good = (repo / "single.Q8_0.gguf").read_bytes()
    (repo / "truncated.gguf").write_bytes(good[: len(good) // 2])
    (repo / "notgguf.gguf").write_bytes(b"hello, this is not a model at all" * 4)
    (repo / "two").mkdir()
    (repo / "two" / "a.gguf").write_bytes(good)
    (repo / "two" / "b.gguf").write_bytes(good)
    entries = {e.name: e for e in ModelRepository(repo).scan()}
    assert entries["single.Q8_0.gguf"].ok and entries["single.Q8_0.gguf"].quantization == "Q8_0"
    e = entries["folder"]
    assert e.ok, e.error
    assert e.architecture == "LlamaForCausalLM" and e.quantization == "Q4_1" and e.num_layers == 2
    assert e.parameters > 0 and e.estimates and e.max_position_embeddings == 2048
    assert "truncated" in entries["truncated.gguf"].error
    assert "not a GGUF file" in entries["notgguf.gguf"].error
    assert "2 .gguf files" in entries["two"].error


def test_impossible_metadata_and_unsupported_arch_are_refused(hf_dir, tmp_path):
    out = tmp_path / "big.gguf"
    write_gguf(hf_dir, out, "F32")
    data = bytearray(out.read_bytes())
    # block_count is a uint32 right after its key: claim 2^30 layers
    key = b"llama.block_count"
    at = data.index(key) + len(key) + 4
    data[at:at + 4] = (1 << 30).to_bytes(4, "little")
    out.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="block_count"):
        inspect_gguf(out)
    out2 = tmp_path / "arch.gguf"
    write_gguf(hf_dir, out2, "F32")
    data = out2.read_bytes().replace(b"llama", b"gemma")  # every llama.* key and the architecture
    out2.write_bytes(data)
    with pytest.raises(GGUFError, match="'gemma' is not supported"):
        inspect_gguf(out2)
    from musaops.daemon.engine.api import LoadError
    with pytest.raises(LoadError, match="not supported"):
        model_path(out2)
