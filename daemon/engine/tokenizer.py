"""Tokenizer, chat template and UTF-8-safe incremental detokenisation.

tokenizer.json goes through the `tokenizers` library (no transformers at runtime); the chat
template comes from tokenizer_config.json (or chat_template.jinja) and renders through a
sandboxed jinja2 environment, like transformers' apply_chat_template, under a time and size
bound (engine/template.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from tokenizers import Tokenizer as HFTokenizer

from . import template as chat_template
from .api import InvalidRequestError, LoadError


def _token_text(tok: Any) -> str | None:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None


class Tokenizer:
    """Encode, decode and render chat messages for one model folder."""

    def __init__(self, model_dir: str | Path) -> None:
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.exists():
            raise LoadError(f"{model_dir} has no tokenizer.json")
        try:
            self._tok = HFTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception subclass
            raise LoadError(f"tokenizer.json in {model_dir} is unreadable: {exc}") from exc
        cfg: dict[str, Any] = {}
        cfg_path = model_dir / "tokenizer_config.json"
        if cfg_path.exists():
            try:
                cfg = json.loads(cfg_path.read_text())
            except json.JSONDecodeError as exc:
                raise LoadError(f"tokenizer_config.json in {model_dir} is not valid JSON: {exc}") from exc
        self.bos_token = _token_text(cfg.get("bos_token"))
        self.eos_token = _token_text(cfg.get("eos_token"))
        self.add_bos = bool(cfg.get("add_bos_token", False))
        template = cfg.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        jinja_file = model_dir / "chat_template.jinja"
        if template is None and jinja_file.exists():
            template = jinja_file.read_text()
        self._template = _compile_template(template, model_dir.name)

    @classmethod
    def from_parts(cls, tok: HFTokenizer, *, name: str, bos_token: str | None, eos_token: str | None,
                   add_bos: bool, chat_template: str | None) -> "Tokenizer":
        """A tokenizer built elsewhere (e.g. from a GGUF file's metadata) with its facts."""
        self = cls.__new__(cls)
        self._tok, self.bos_token, self.eos_token, self.add_bos = tok, bos_token, eos_token, add_bos
        self._template = _compile_template(chat_template, name)
        return self

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def token_id(self, text: str | None) -> int | None:
        return None if text is None else self._tok.token_to_id(text)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=add_special).ids
        bos = self.token_id(self.bos_token)
        if add_special and self.add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def apply_chat_template(self, messages: list[tuple[str, str]], *, max_chars: int = 1 << 20,
                            timeout_s: float = chat_template.DEFAULT_TIMEOUT_S) -> str:
        """The prompt the template makes of `messages`; InvalidRequestError when it fails or
        passes a bound (`max_chars` of output, `timeout_s` of rendering)."""
        if self._template is None:
            raise InvalidRequestError("this model has no chat template; send a raw prompt instead")
        try:
            return chat_template.render(
                self._template, max_chars=max_chars, timeout_s=timeout_s,
                messages=[{"role": r, "content": c} for r, c in messages],
                add_generation_prompt=True, bos_token=self.bos_token or "",
                eos_token=self.eos_token or "")
        except chat_template.TemplateRenderError as exc:
            raise InvalidRequestError(str(exc)) from None


def _compile_template(template: str | None, name: str):
    if not template:
        return None
    try:
        return chat_template.compile_template(template)
    except TemplateError as exc:
        raise LoadError(f"the chat template of {name} does not compile: {exc}") from exc


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas that never split a character.

    The vLLM approach: decode a small window before the new tokens and after, and emit the
    difference once it no longer ends in a replacement character (an incomplete UTF-8 run).
    """

    def __init__(self, tokenizer: Tokenizer, prompt_tail: list[int]) -> None:
        self.tok = tokenizer
        self.ids = list(prompt_tail[-6:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix = self.tok.decode(self.ids[self.prefix_offset:self.read_offset])
        full = self.tok.decode(self.ids[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            delta = full[len(prefix):]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an unfinished character becomes U+FFFD)."""
        prefix = self.tok.decode(self.ids[self.prefix_offset:self.read_offset])
        full = self.tok.decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return full[len(prefix):] if len(full) > len(prefix) else ""
