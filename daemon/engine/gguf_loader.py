"""Load a GGUF file onto a device: dequantize each tensor, undo llama.cpp's Q/K permutation,
and build the tokenizer (byte-level or SentencePiece-style BPE) and chat template from the
file's metadata.

Facts and validation come from gguf_meta (torch-free, shared with the repository); tensor
bytes are read from a read-only memory map at the offsets the `gguf` reader found, and the
`gguf` package's per-format `dequantize_rows` turns blocks into float32 a few thousand rows
at a time, each slice copied (and converted) straight into the model's parameter: host
memory holds about 4 MiB of dequantized values beside the model, and no tensor is
converted twice.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from .api import DTYPES, LoadError
from .gguf_meta import (TOKEN_CONTROL, TOKEN_UNKNOWN, TOKEN_USER_DEFINED, GGUFError, GGUFModel, TokenizerSpec,
                        inspect_gguf)
from .model import CausalLM
from .tokenizer import Tokenizer

# tokenizer.ggml.pre -> how text is split before byte-level BPE (llama.cpp's llama-vocab.cpp).
_GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"""
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {
    **dict.fromkeys(("default", "gpt2", "gpt-2", "mpt", "olmo"), ("regex", _GPT2_REGEX)),
    **dict.fromkeys(("smollm", "starcoder", "refact", "codeshell"), ("digits", _GPT2_REGEX)),
    **dict.fromkeys(("llama-bpe", "llama3", "smaug-bpe", "dbrx"), ("regex", _LLAMA3_REGEX)),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), ("regex", _QWEN2_REGEX)),
}
SPACE = "\u2581"   # SentencePiece's visible space


def model_path(model_dir: str | Path) -> GGUFModel:
    """The inspected GGUF model behind a repository path (file or folder); LoadError if not."""
    from .gguf_meta import gguf_file

    try:
        path = gguf_file(model_dir)
        if path is None:
            raise LoadError(f"{Path(model_dir).name} holds no .gguf file")
        return inspect_gguf(path)
    except GGUFError as exc:
        raise LoadError(str(exc)) from None


def build_tokenizer(g: GGUFModel) -> Tokenizer:
    """The file's tokenizer: byte-level BPE ("gpt2") or SentencePiece-style BPE ("llama"),
    its control tokens kept whole, EOS appended when the file asks (BOS is Tokenizer's)."""
    from tokenizers import AddedToken, processors

    spec = g.tokenizer
    assert spec is not None
    try:
        tok = _spm_tokenizer(spec) if spec.model == "llama" else _byte_level_tokenizer(g, spec)
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own exception type
        raise LoadError(f"{g.path.name}: the tokenizer in its metadata is unusable: {exc}") from None
    special = (TOKEN_CONTROL, TOKEN_UNKNOWN) if spec.model == "llama" else (TOKEN_CONTROL,)
    added = [AddedToken(t, special=(ty in special), normalized=False)
             for t, ty in zip(spec.tokens, spec.token_types) if ty in (*special, TOKEN_USER_DEFINED)]
    tok.add_tokens(added)
    text = lambda i: spec.tokens[i] if i is not None else None  # noqa: E731
    eos = text(spec.eos_ids[0]) if spec.eos_ids else None
    if spec.add_eos and eos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, spec.eos_ids[0])])
    return Tokenizer.from_parts(tok, name=g.path.name, bos_token=text(spec.bos_id), eos_token=eos,
                                add_bos=spec.add_bos, chat_template=spec.chat_template)


def _byte_level_tokenizer(g: GGUFModel, spec: TokenizerSpec):
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    kind = PRE_TOKENIZERS.get(spec.pre)
    if kind is None:
        raise LoadError(f"{g.path.name}: pre-tokenizer {spec.pre!r} is not supported "
                        f"(supported: {', '.join(sorted(PRE_TOKENIZERS))})")
    vocab = {t: i for i, t in enumerate(spec.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in spec.merges]
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False,
                                 ignore_merges=spec.pre in ("llama-bpe", "llama3")))
    how, regex = kind
    if how == "digits":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    elif regex == _GPT2_REGEX:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def _spm_tokenizer(spec: TokenizerSpec):
    """SentencePiece-style BPE as transformers builds it from a GGUF (LlamaTokenizer): spaces
    become "▁" (one put before the text when add_space_prefix), pieces merge in score order,
    characters outside the vocabulary fall back to <0xXX> byte tokens, and decoding turns
    both back (dropping the prefix space)."""
    from tokenizers import decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    vocab = {t: i for i, t in enumerate(spec.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in spec.merges] if spec.merges else spm_merges(vocab, spec)
    unk = spec.tokens[spec.unk_id] if spec.unk_id is not None else None
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPACE, prepend_scheme="first" if spec.add_space_prefix else "never", split=False)
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.add_space_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def spm_merges(vocab: dict[str, int], spec: TokenizerSpec) -> list[tuple[str, str]]:
    """BPE merges a SentencePiece vocabulary implies: every way to cut a piece into two pieces
    of the vocabulary, best piece score first (then longer left, longer right part); one
    piece's cuts in vocabulary order of their parts. The order transformers derives."""
    score = dict(zip(spec.tokens, spec.scores))
    cuts: list[tuple[float, int, int, str, str]] = []
    for piece, s in score.items():
        local = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        cuts += [(s, len(a), len(b), a, b) for a, b in local]
    cuts.sort(key=lambda c: c[:3], reverse=True)   # stable: ties keep the order above
    return [(a, b) for _, _, _, a, b in cuts]


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp convert's `permute` of Q/K rows (rotary halves interleaved per head)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequantized(g: GGUFModel, hf_name: str, mm: np.ndarray) -> np.ndarray:
    """One tensor as float32 (or float16 for F16 files) in HF layout."""
    import gguf

    ref = g.tensors[hf_name]
    raw = mm[ref.offset:ref.offset + ref.nbytes]
    if ref.type == "F32":
        w = raw.view(np.float32).reshape(ref.shape)
    elif ref.type == "F16":
        w = raw.view(np.float16).reshape(ref.shape)
    else:
        qtype = gguf.GGMLQuantizationType[ref.type]
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        rows = int(np.prod(ref.shape[:-1]))
        w = gguf.quants.dequantize(raw.reshape(rows, ref.shape[-1] // block * type_size), qtype)
        w = w.reshape(ref.shape)
    if g.permuted_qk and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
        cfg = g.config
        w = unpermute_qk(w, cfg.num_heads if hf_name.endswith("q_proj.weight") else cfg.num_kv_heads)
    return w


ROWS_BYTES = 1 << 20   # float32 bytes dequantized per numpy call
# Elements per copy_: at or under torch's parallel grain size (32,768) a copy runs on the
# calling thread. Larger copies fork OpenMP workers, which on a busy 2-core host spin
# against each other and made loading 5-10x slower than the dequantizing itself.
COPY_ELEMENTS = 32768


def _copy_rows(dst: torch.Tensor, src: np.ndarray | torch.Tensor, row0: int = 0) -> None:
    """dst[row0:row0 + len(src)] = src (converted), in single-threaded slices."""
    src = torch.from_numpy(src) if isinstance(src, np.ndarray) else src
    step = max(1, COPY_ELEMENTS // max(1, src[0].numel() if src.dim() > 1 else 1))
    n = src.shape[0]
    for r in range(0, n, step):
        end = min(r + step, n)
        dst[row0 + r:row0 + end].copy_(src[r:end])


def fill(g: GGUFModel, hf_name: str, mm: np.ndarray, dst: torch.Tensor) -> None:
    """Tensor `hf_name` of the file written into `dst` (its HF shape, any dtype): floats are
    copied from the map, quantized rows dequantized slice by slice; Q/K rows of a permuted
    file go through `dequantized` whole (they are small) to undo the permutation."""
    import gguf

    ref = g.tensors[hf_name]
    cols = ref.shape[-1]
    flat = dst.view(-1, cols)
    permuted = g.permuted_qk and hf_name.endswith(("q_proj.weight", "k_proj.weight"))
    with warnings.catch_warnings():   # from_numpy of the read-only map: only ever read
        warnings.simplefilter("ignore", UserWarning)
        if permuted:
            _copy_rows(flat, np.ascontiguousarray(dequantized(g, hf_name, mm)).reshape(-1, cols))
            return
        raw = mm[ref.offset:ref.offset + ref.nbytes]
        if ref.type in ("F32", "F16"):
            _copy_rows(flat, raw.view(np.float32 if ref.type == "F32" else np.float16).reshape(-1, cols))
            return
        if ref.type == "BF16":
            _copy_rows(flat, torch.from_numpy(raw.view(np.int16).reshape(-1, cols)).view(torch.bfloat16))
            return
        qtype = gguf.GGMLQuantizationType[ref.type]
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        quant = getattr(gguf.quants, ref.type)
        quant.init_grid()
        rows = raw.reshape(-1, cols // block * type_size)
        step = max(1, ROWS_BYTES // (4 * cols))
        for r in range(0, rows.shape[0], step):
            _copy_rows(flat, quant.dequantize_rows(rows[r:r + step]), r)


def load_gguf_model(g: GGUFModel, dtype: str, device: torch.device, max_positions: int,
                    progress=None, cancel: threading.Event | None = None,
                    compute_dtype: torch.dtype | None = None) -> CausalLM:
    """The model of `g` on `device` in `dtype`, every tensor dequantized from the file."""
    from .loader import TORCH_DTYPES, finish_load, load_failed

    if dtype not in DTYPES:
        raise LoadError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    tdtype = TORCH_DTYPES[dtype]
    slots = g.architecture.weights(g.config)
    try:
        with torch.device("meta"):
            model = CausalLM(g.config, max_positions, "meta", tdtype, compute_dtype)
        model = model.to_empty(device=device)
        model.eval().requires_grad_(False)
        total = sum(int(np.prod(r.shape)) for r in g.tensors.values()) * torch.tensor([], dtype=tdtype).element_size()
        if progress:
            progress("loading_weights", 0, total, f"dequantizing {len(slots)} tensors of {g.path.name} "
                                                  f"({g.quantization})")
        mm = np.memmap(g.path, dtype=np.uint8, mode="r")
        done = 0
        with torch.inference_mode():
            for hf_name, slot in slots.items():
                if cancel is not None and cancel.is_set():
                    raise LoadError("loading was cancelled")
                param = model.get_parameter(slot.param)
                dst = param[slot.row:slot.row + slot.shape[0]]
                fill(g, hf_name, mm, dst)
                done += dst.nbytes
                if progress:
                    progress("loading_weights", done, total, g.tensors[hf_name].name)
        del mm
        finish_load(model, device, tdtype, compute_dtype)
    except LoadError:
        raise
    except (RuntimeError, MemoryError) as exc:
        raise load_failed(exc, g.path.name, dtype) from exc
    except (OSError, ValueError) as exc:
        raise LoadError(f"could not read the weights of {g.path.name}: {exc}") from exc
    return model
