"""Request bodies of the OpenAI-compatible endpoints, as pydantic models.

Types are strict (a string where a number belongs is a 400, not a guess); fields this
server does not know are ignored, as OpenAI-compatible servers do; fields it knows but
cannot honour (n > 1, tools, logprobs, echo) are refused with a sentence by `unsupported()`.
Value ranges are checked once, by the engine's SamplingParams (engine/api.py), for every
transport alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..engine.api import SamplingParams

# The engine's sampling fields; a request carries each under the same name (a test holds
# every one of them to a field of _Common below).
SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))

_U64 = 2**64 - 1


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class _Common(BaseModel):
    """Fields both endpoints share: the model, sampling and streaming."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None                  # vLLM's extension
    repetition_penalty: float | None = None   # vLLM's extension
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = Field(default=None, ge=0, le=_U64)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    ignore_eos: bool = False                  # vLLM's extension (benchmarks)
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logprobs: Any = None
    tools: Any = None
    functions: Any = None

    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    def sampling(self) -> dict[str, Any]:
        """Values by SamplingParams field name (None = the default)."""
        values = {name: getattr(self, name) for name in SAMPLING_FIELDS}
        values["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        values["max_tokens"] = self.max_new_tokens()
        values["ignore_eos"] = self.ignore_eos or None
        return values

    def unsupported(self) -> tuple[str, str] | None:
        """(param, sentence) for a field this server cannot honour, else None."""
        if self.n not in (None, 1):
            return "n", f"n must be 1 on this server (one choice per request); got {self.n}."
        if self.logprobs not in (None, False, 0):
            return "logprobs", "logprobs are not supported by this server."
        if self.tools or self.functions:
            return ("tools" if self.tools else "functions"), "tool and function calling are not supported by this server."
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: str
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: Any = None

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def unsupported(self) -> tuple[str, str] | None:
        fmt = self.response_format
        if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
            return "response_format", "response_format other than text is not supported by this server."
        return super().unsupported()


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def prompt_text(self) -> str | None:
        """The one prompt, or None when a list of several was sent."""
        if isinstance(self.prompt, str):
            return self.prompt
        return self.prompt[0] if len(self.prompt) == 1 else None

    def unsupported(self) -> tuple[str, str] | None:
        if self.prompt_text() is None:
            return "prompt", "Send one prompt per request (a list of several is not supported)."
        if self.echo:
            return "echo", "echo is not supported by this server."
        if self.suffix:
            return "suffix", "suffix is not supported by this server."
        if self.best_of not in (None, 1):
            return "best_of", f"best_of must be 1 on this server; got {self.best_of}."
        return super().unsupported()
