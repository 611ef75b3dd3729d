"""Generation through the child's OpenAI-compatible API, as the engine seam's events.

One streaming POST per request (/v1/completions for a prompt, /v1/chat/completions for
messages, so the checkpoint's chat template is applied by vLLM). musad measures the
request's timings itself, as the built-in engine reports them: queue_s is the time until
the child answered with its response headers, ttft_s until the first generated token,
and every inter-token gap (a chunk that carries k tokens counts its gap once and k-1 gaps
of 0). Leaving the iterator (the RPC was cancelled, or the deployment drains) closes the
HTTP stream, and vLLM aborts a request whose client went away.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import AsyncIterator, Callable

import httpx

from ..engine.api import (FinishReason, GenerationRequest, GenerationResult, InvalidRequestError,
                          RequestMetrics, TextDelta)

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.CANCELLED,
           "repetition": FinishReason.STOP}


class ChildError(Exception):
    """The child failed a request (it crashed, or answered with a server error)."""


def request_body(served: str, req: GenerationRequest, max_context: int) -> tuple[str, dict]:
    """(path, JSON body) for `req`."""
    s = req.sampling
    body: dict = {
        "model": served, "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "max_tokens": max(1, min(s.max_tokens, max_context - 1)),
        "temperature": s.temperature, "top_p": s.top_p, "repetition_penalty": s.repetition_penalty,
        "frequency_penalty": s.frequency_penalty, "presence_penalty": s.presence_penalty,
        "ignore_eos": s.ignore_eos, "skip_special_tokens": True,
    }
    if s.top_k > 0:
        body["top_k"] = s.top_k
    if s.seed is not None:
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if req.cache_scope:  # vLLM shares cached prefixes only between requests with the same salt
        body["cache_salt"] = hashlib.sha256(req.cache_scope.encode()).hexdigest()[:32]
    if req.messages:
        body["messages"] = [{"role": r, "content": c} for r, c in req.messages]
        return "/v1/chat/completions", body
    body["prompt"] = req.prompt or ""
    return "/v1/completions", body


def _error_text(raw: bytes) -> str:
    try:
        err = json.loads(raw)
        msg = err.get("error", err)
        return str(msg.get("message", msg) if isinstance(msg, dict) else msg)
    except ValueError:
        return raw.decode("utf-8", "replace")[:400]


async def generate(client: httpx.AsyncClient, served: str, req: GenerationRequest, max_context: int,
                   opened: Callable[[httpx.Response], None] = lambda r: None
                   ) -> AsyncIterator[TextDelta | GenerationResult]:
    """TextDelta..., then one GenerationResult. A request the child refuses (HTTP 4xx)
    raises InvalidRequestError before the first item; a child that fails raises ChildError."""
    path, body = request_body(served, req, max_context)
    chat = bool(req.messages)
    t0 = time.monotonic()
    async with client.stream("POST", path, json=body, headers={"X-Request-Id": req.request_id}) as resp:
        opened(resp)
        if resp.status_code != 200:
            text = _error_text(await resp.aread())
            if 400 <= resp.status_code < 500:
                raise InvalidRequestError(text)
            raise ChildError(f"the vLLM child answered HTTP {resp.status_code}: {text}")
        t_open = time.monotonic()
        prompt_tokens = completion = pending = 0
        first_at = last_at = 0.0
        gaps: list[float] = []
        finish: FinishReason | None = None
        stop = ""
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk and not chunk.get("choices"):
                raise ChildError(f"the vLLM child failed the request: {_error_text(data.encode())}")
            usage = chunk.get("usage") or {}
            prompt_tokens = usage.get("prompt_tokens", prompt_tokens)
            new = usage.get("completion_tokens", completion) - completion
            text = ""
            for choice in chunk.get("choices") or ():
                text += (choice.get("delta") or {}).get("content") or "" if chat else choice.get("text") or ""
                if choice.get("finish_reason"):
                    finish = _FINISH.get(choice["finish_reason"], FinishReason.ERROR)
                    reason = choice.get("stop_reason")
                    stop = reason if isinstance(reason, str) else ""
            if new > 0:
                now = time.monotonic()
                if first_at == 0.0:
                    first_at = now
                    gaps.extend([0.0] * (new - 1))
                else:
                    gaps.append(now - last_at)
                    gaps.extend([0.0] * (new - 1))
                last_at = now
                completion += new
                pending += new
            if text:
                # continuous_usage_stats: vLLM reports the prompt's tokens with every chunk
                yield TextDelta(text, pending, int(prompt_tokens))
                pending = 0
        end = time.monotonic()
    if finish is None:
        raise ChildError("the vLLM child ended the stream without a finish reason")
    metrics = RequestMetrics(
        request_id=req.request_id, prompt_tokens=int(prompt_tokens), completion_tokens=int(completion),
        queue_s=t_open - t0, ttft_s=(first_at - t0) if first_at else 0.0,
        mean_itl_s=(sum(gaps) / len(gaps)) if gaps else 0.0, itl_s=tuple(gaps), total_s=end - t0,
        finish_reason=finish)
    yield GenerationResult(finish, metrics, stop=stop)
