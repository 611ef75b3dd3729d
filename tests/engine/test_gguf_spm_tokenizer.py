"""SentencePiece-style GGUF vocabularies (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral,
TinyLlama, CodeLlama...): a small file written here with gguf.GGUFWriter (a few hundred
"▁"-prefixed pieces with scores and no merges, <unk>/<s>/</s>, the 256 <0xXX> byte tokens,
two control tokens and a user-defined one, over a tiny random llama) tokenizes exactly as
transformers' `AutoTokenizer.from_pretrained(dir, gguf_file=...)` does, decodes back, and
deploys and answers on a real musad.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("torch")

from musaops.daemon.engine.api import LoadError  # noqa: E402
from musaops.daemon.engine.gguf_loader import build_tokenizer, model_path  # noqa: E402
from musaops.daemon.engine.gguf_meta import GGUFError, inspect_gguf  # noqa: E402

from tests.conftest import read_generate  # noqa: E402

pytestmark = pytest.mark.timeout(300)

S = "\u2581"
WORDS = ("the", "cat", "is", "on", "mat", "hello", "world", "what", "test", "and", "of", "to", "in", "it",
         "line", "new", "yes", "no", "ok", "emoji", "The", "Hello", "café", "日")
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()" + S + "é日"
CONTROL, USER = ("[INST]", "[/INST]"), ("<think>",)
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
            "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
TEXTS = ["Hello world", "hello", "the cat is on the mat", " hello  world ", "  two leading", "trail  ", "a   b",
         "123 4567 1234", "What?! yes, no: (ok).", "é", "café 日本", "😀 emoji", "\n\nnew\tline", "", " ",
         "[INST] hello [/INST]", "hi</s>", "x<think>y", "<unk>", "what[INST]the"]


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types shaped like a Llama 2 vocabulary: specials, bytes, then
    pieces best-first (every piece is a known piece plus one character, so BPE reaches it),
    then single characters with the lowest scores, then added tokens."""
    tokens, types = ["<unk>", "<s>", "</s>"], [2, 3, 3]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    pieces = {S + S, S + S + S, S + S + S + S, "12", S + "1", S + "12", "ll", "llo"}
    for w in WORDS:
        pieces.update(S + w[:k] for k in range(1, len(w) + 1))
        pieces.update(w[:k] for k in range(2, len(w) + 1))
    pieces -= set(CHARS)
    ordered = sorted(pieces, key=lambda p: (len(p), p))
    scores = [0.0] * len(tokens) + [-float(i) for i in range(len(ordered))]
    tokens += ordered
    types += [1] * len(ordered)
    for j, c in enumerate(dict.fromkeys(CHARS)):
        tokens.append(c)
        types.append(1)
        scores.append(-1000.0 - j)
    for t in CONTROL + USER:
        tokens.append(t)
        types.append(3 if t in CONTROL else 4)
        scores.append(0.0)
    return tokens, scores, types


def write_spm_gguf(out: pathlib.Path, *, tokenizer_model: str = "llama", **flags) -> int:
    """A tiny F32 llama (hidden 64, 2 layers) with the SentencePiece vocabulary; `flags` set
    add_space_prefix / add_bos / add_eos when given. Returns the vocabulary size."""
    tokens, scores, types = vocabulary()
    v, h, ffn, layers, heads, kv_heads = len(tokens), 64, 128, 2, 4, 2
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(h)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(h // heads)
    w.add_vocab_size(v)
    w.add_tokenizer_model(tokenizer_model)
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    if "add_space_prefix" in flags:
        w.add_add_space_prefix(flags["add_space_prefix"])
    if "add_bos" in flags:
        w.add_add_bos_token(flags["add_bos"])
    if "add_eos" in flags:
        w.add_add_eos_token(flags["add_eos"])
    w.add_chat_template(TEMPLATE)
    rng = np.random.default_rng(0)

    def rand(name: str, shape: tuple[int, ...]) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    rand("token_embd.weight", (v, h))
    rand("output.weight", (v, h))
    w.add_tensor("output_norm.weight", np.ones(h, np.float32))
    kv = kv_heads * h // heads
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(h, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(h, np.float32))
        for name, shape in (("attn_q", (h, h)), ("attn_k", (kv, h)), ("attn_v", (kv, h)), ("attn_output", (h, h)),
                            ("ffn_gate", (ffn, h)), ("ffn_up", (ffn, h)), ("ffn_down", (h, ffn))):
            rand(f"blk.{i}.{name}.weight", shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return v


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("spm") / "tiny-spm.F32.gguf"
    write_spm_gguf(out)
    return out


@pytest.fixture(scope="module")
def hf_tok(spm_file):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spm_file.parent, gguf_file=spm_file.name)


def test_ids_and_decoding_match_transformers(spm_file, hf_tok):
    ours = build_tokenizer(model_path(spm_file))
    assert ours.vocab_size == hf_tok.backend_tokenizer.get_vocab_size()
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == hf_tok.encode(text), text
        assert ids[0] == 1, text                                  # BOS: the file has no add_bos flag
        assert ours.encode(text, add_special=False) == hf_tok.encode(text, add_special_tokens=False), text
        assert ours.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True), text
    # byte fallback, control and user-defined tokens whole, "▁" pieces merged by score
    assert ours.encode("日本", add_special=False) == [ours.token_id(t) for t in (S + "日", "<0xE6>", "<0x9C>", "<0xAC>")]
    assert ours.encode("[INST]the cat[/INST]", add_special=False) == \
        [ours.token_id(t) for t in ("[INST]", "the", S + "cat", "[/INST]")]
    assert ours.encode("x<think>y", add_special=False)[2] == ours.token_id("<think>")
    assert ours.encode("hello world", add_special=False) == [ours.token_id(S + "hello"), ours.token_id(S + "world")]


def test_decode_round_trips(spm_file):
    ours = build_tokenizer(model_path(spm_file))
    for text in TEXTS:
        if text.startswith(" ") or any(t in text for t in ("[INST]", "</s>", "<unk>")):
            continue   # the prefix space is dropped on decoding; special tokens are skipped
        assert ours.decode(ours.encode(text)) == text
    # SentencePiece's prefix space: one leading space is the prefix itself (transformers too)
    assert ours.decode(ours.encode(" hello")) == "hello"


def test_flags_in_the_file_are_honoured(tmp_path):
    """add_bos_token false, add_eos_token true and add_space_prefix false (transformers ignores
    the last and always prepends "▁"; llama.cpp does not, and neither do we)."""
    out = tmp_path / "flags.gguf"
    write_spm_gguf(out, add_space_prefix=False, add_bos=False, add_eos=True)
    ours = build_tokenizer(model_path(out))
    assert ours.encode("hello") == [ours.token_id("hello"), 2]
    assert ours.encode("hello", add_special=False) == [ours.token_id("hello")]
    assert ours.encode(" hello world") == [ours.token_id(S + "hello"), ours.token_id(S + "world"), 2]
    assert ours.decode(ours.encode(" hello world")) == " hello world"


def test_other_tokenizer_models_are_refused_in_one_sentence(tmp_path):
    out = tmp_path / "bert.gguf"
    write_spm_gguf(out, tokenizer_model="bert")
    with pytest.raises(GGUFError, match=r"tokenizer model 'bert' is not supported \(gpt2-style byte-level BPE and "
                                        r"llama-style SentencePiece are\)$"):
        inspect_gguf(out)
    with pytest.raises(LoadError, match="'bert' is not supported"):
        model_path(out)


def test_spm_gguf_is_listed_and_deploys_on_musad(make_daemon, tmp_path):
    from musaops.v1 import common_pb2, inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc

    repo = tmp_path / "models"
    repo.mkdir()
    path = repo / "tiny-spm.F32.gguf"
    vocab = write_spm_gguf(path)
    prompt_ids = build_tokenizer(model_path(path)).encode("the cat is on the mat")
    d = make_daemon(models_dir=repo)

    async def run():
        async with d.channel() as ch:
            node = node_pb2_grpc.NodeStub(ch)
            info = {m.name: m for m in (await node.ListModels(node_pb2.ListModelsRequest())).models}[path.name]
            listed = (info.state, info.reason, info.architecture, info.vocab_size, info.quantization)
            events = [e async for e in node.Deploy(node_pb2.DeployRequest(
                model=path.name, dtype="float32", max_batch=2, max_context=128))]
            assert events[-1].stage == node_pb2.DEPLOY_STAGE_READY, events[-1].message
            stub = inference_pb2_grpc.InferenceStub(ch)
            out = []
            for req in (inference_pb2.GenerateRequest(prompt="the cat is on the mat"),
                        inference_pb2.GenerateRequest(
                            messages=[inference_pb2.ChatMessage(role="user", content="hello")])):
                req.model = path.name
                req.sampling.CopyFrom(inference_pb2.SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
                text, result = await read_generate(stub, req)
                out.append((result.usage.prompt_tokens, result.usage.completion_tokens, text))
            return listed, out

    listed, out = d.call(run(), timeout=240)
    assert listed == (common_pb2.MODEL_STATE_AVAILABLE, "", "LlamaForCausalLM", vocab, "F32")
    (raw_prompt, raw_n, raw_text), (chat_prompt, chat_n, chat_text) = out
    assert raw_prompt == len(prompt_ids) and raw_n == 8 and raw_text
    # "<s>[INST] hello [/INST]": BOS, [INST], ▁hello, ▁, [/INST]
    assert chat_prompt == 5 and chat_n == 8 and chat_text
