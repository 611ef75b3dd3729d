"""A tiny Llama checkpoint written from scratch, so the stack runs without any download.

`musad demo-model DIR` writes an HF-format folder (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json with a ChatML template, generation_config.json) that
loads through the engine's normal loader and through `transformers`. Weights are seeded
random float32 (numpy cannot hold bfloat16); the tokenizer is a byte-level BPE trained here
on a fixed text, so every run writes the same bytes. torch is not needed.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

DEMO_MODEL_NAME = "tiny-llama"
# Said wherever the demo model is shown (config.json "musaops_notice" -> ModelInfo.notice).
RANDOM_WEIGHTS_NOTICE = "this demo model has random weights: it answers with noise, not language"

# Special tokens: ids 0..3 in this order.
BOS, IM_START, IM_END, PAD = "<|begin_of_text|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [BOS, IM_START, IM_END, PAD]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Shapes: hidden 64, 2 layers, 4 heads (head_dim 16), 2 KV heads, MLP 128.
SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=128, max_position_embeddings=2048)
VOCAB_TARGET = 512

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A model repository holds folders of weights.
Moore Threads MUSA GPUs run the inference engine; CUDA and the CPU are fallbacks.
Hello, world! How are you today? I am fine, thank you. What is the weather like?
The daemon streams telemetry: utilisation, memory, temperature, power and clocks.
Continuous batching admits new requests while others decode. Tokens stream back to clients.
user assistant system message content role prompt answer question number one two three
0123456789 + - * / = ( ) [ ] { } < > : ; , . ! ? ' " # $ % & @ ^ _ ` | ~ \\
"""


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = _CORPUS.splitlines() * 20
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    return tok


def _weights(vocab: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded random Llama weights, scaled so logits are peaked (greedy output is stable)."""
    rng = np.random.default_rng(seed)
    h, i = SHAPE["hidden_size"], SHAPE["intermediate_size"]
    head_dim = h // SHAPE["num_attention_heads"]
    kv = SHAPE["num_key_value_heads"] * head_dim

    def linear(out_f: int, in_f: int) -> np.ndarray:
        return (rng.standard_normal((out_f, in_f)) / np.sqrt(in_f)).astype(np.float32)

    w: dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.standard_normal((vocab, h)).astype(np.float32)}
    for layer in range(SHAPE["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w[p + "self_attn.q_proj.weight"] = linear(h, h)
        w[p + "self_attn.k_proj.weight"] = linear(kv, h)
        w[p + "self_attn.v_proj.weight"] = linear(kv, h)
        w[p + "self_attn.o_proj.weight"] = linear(h, h)
        w[p + "mlp.gate_proj.weight"] = linear(i, h)
        w[p + "mlp.up_proj.weight"] = linear(i, h)
        w[p + "mlp.down_proj.weight"] = linear(h, i)
        w[p + "input_layernorm.weight"] = np.ones(h, np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
    w["model.norm.weight"] = np.ones(h, np.float32)
    w["lm_head.weight"] = (4.0 * linear(vocab, h)).astype(np.float32)
    return w


def write_demo_model(directory: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Writes the demo checkpoint into `directory` (created if needed) and returns it."""
    from safetensors.numpy import save_file

    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer()
    vocab = tok.get_vocab_size()
    bos_id, eos_id, pad_id = (tok.token_to_id(t) for t in (BOS, IM_END, PAD))

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **SHAPE,
        "head_dim": SHAPE["hidden_size"] // SHAPE["num_attention_heads"],
        "vocab_size": vocab,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": bos_id,
        "eos_token_id": [eos_id, pad_id],
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
        "musaops_notice": RANDOM_WEIGHTS_NOTICE,
    }
    _write_json(out / "config.json", config)
    save_file(_weights(vocab, seed), str(out / "model.safetensors"), metadata={"format": "pt"})
    tok.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": IM_END,
        "pad_token": PAD,
        "add_bos_token": False,
        "model_max_length": SHAPE["max_position_embeddings"],
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    })
    _write_json(out / "special_tokens_map.json", {"bos_token": BOS, "eos_token": IM_END, "pad_token": PAD})
    _write_json(out / "generation_config.json", {
        "bos_token_id": bos_id,
        "eos_token_id": [eos_id, pad_id],
        "pad_token_id": pad_id,
        "do_sample": False,
        "max_new_tokens": 64,
    })
    return out


def _write_json(path: pathlib.Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
