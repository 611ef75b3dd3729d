"""The FastAPI app: the caller from the bearer key, then the inference core.

Bodies are read and validated after the caller is known (an unauthenticated client learns
nothing about its request). Streams are Server-Sent Events: one `data: {chunk}` per text
delta, the finish chunk, with `stream_options.include_usage` a last chunk holding only
usage, then `data: [DONE]`. Without include_usage the finish chunk carries `usage`, so
every answer says what it cost. A client that disconnects mid-stream cancels the request
in the engine (Starlette cancels the stream when it reads the disconnect); so does one that
disconnects while waiting for a non-streaming answer (`_collect` watches the connection).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from ..deployments import State
from ..engine.api import FinishReason, GenerationResult, TextDelta
from ..errors import RequestError
from ..inference_core import AUDIT_ACTION, Generation, InferenceRequest
from ..trust.auth import role_allows
from ..trust.caller import Caller
from . import errors
from .errors import ApiError
from .schemas import ChatCompletionRequest, CompletionRequest

GENERATE_METHOD = "/musaops.v1.Inference/Generate"   # HTTP inference needs the role that may call it
FINISH = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length", FinishReason.CANCELLED: "abort",
          FinishReason.ERROR: "error"}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _peer(request: Request) -> str:
    c = request.client
    if c is None:
        return ""
    return f"ipv6:[{c.host}]:{c.port}" if ":" in c.host else f"ipv4:{c.host}:{c.port}"


class HttpAuth:
    """Resolves the caller of an HTTP request from `Authorization: Bearer KEY` (a musad
    token), with the same rules as the gRPC interceptor; refusals are audited."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def caller(self, request: Request) -> Caller:
        peer = _peer(request)
        header = request.headers.get("authorization")
        token = None
        if header is not None:
            token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        tokens = self.ctx.auth
        info = None
        if tokens is not None and token:
            if tokens.needs_refresh():
                await asyncio.to_thread(tokens.refresh)   # a DB read, off the event loop
            info = tokens.authenticate(token, refresh=False)
        if not self.ctx.config.auth.required:
            return Caller(info.name if info else "anonymous", info.role if info else "", peer)
        if token is None:
            await self._deny(request, Caller("anonymous", "", peer), ApiError(
                401, "This node requires an API key: send the header 'Authorization: Bearer KEY' "
                     "(an admin creates keys with 'musad token create').", code="missing_api_key"))
        if not token:
            await self._deny(request, Caller("anonymous", "", peer), ApiError(
                401, "The Authorization header must be 'Bearer KEY'.", code="invalid_api_key"))
        if info is None:
            why = tokens.describe(token) if tokens is not None else "no token store"
            await self._deny(request, Caller("invalid-token", "", peer), ApiError(
                401, f"Incorrect API key: {why}; ask an admin for a valid key.", code="invalid_api_key"))
        caller = Caller(info.name, info.role, peer)
        if not role_allows(info.role, GENERATE_METHOD):
            await self._deny(request, caller, ApiError(
                403, f"Role {info.role!r} may not run inference.", "permission_error", code="permission_denied"))
        return caller

    async def _deny(self, request: Request, caller: Caller, err: ApiError) -> None:
        await self.ctx.audit.record(action=AUDIT_ACTION, target="",
                                    params={"method": f"{request.method} {request.url.path}"},
                                    outcome="denied", error=err.message, caller=caller)
        raise err


async def _body(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        body = model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise errors.validation_error(exc) from None
    if (problem := body.unsupported()) is not None:
        raise ApiError(400, problem[1], param=problem[0])
    return body


def _usage(gen: Generation) -> dict[str, int]:
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens}


class _Stream(StreamingResponse):
    """An SSE response that releases its generation however the connection ends (even
    when the client left before the first byte)."""

    def __init__(self, gen: Generation, content: AsyncIterator[str]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.gen = gen

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.gen.aclose()


async def _sse(gen: Generation, chunk: Callable[[dict | None, str | None], dict], include_usage: bool,
               first: dict | None) -> AsyncIterator[str]:
    """`chunk(delta, finish_reason)` builds one chunk's dict; `delta` None means no text."""
    if first is not None:
        yield f"data: {_dumps(chunk(first, None))}\n\n"
    async for item in gen.events():
        if isinstance(item, TextDelta):
            yield f"data: {_dumps(chunk({'text': item.text}, None))}\n\n"
            continue
        usage = _usage(gen)
        if item.finish_reason is FinishReason.ERROR:
            err = errors.error_body(item.error or "The engine failed this request.", "server_error")
            yield f"data: {_dumps(err)}\n\n"
        else:
            last = chunk(None, FINISH[item.finish_reason])
            if not include_usage:
                last["usage"] = usage
            yield f"data: {_dumps(last)}\n\n"
            if include_usage:
                tail = chunk(None, None)
                tail["choices"] = []
                tail["usage"] = usage
                yield f"data: {_dumps(tail)}\n\n"
    yield "data: [DONE]\n\n"


async def _drain(gen: Generation) -> tuple[str, GenerationResult]:
    parts: list[str] = []
    result = None
    async for item in gen.events():
        if isinstance(item, TextDelta):
            parts.append(item.text)
        else:
            result = item
    assert result is not None
    if result.finish_reason is FinishReason.ERROR:
        raise ApiError(500, result.error or "The engine failed this request.", "server_error")
    return "".join(parts), result


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone. The body is read by then, so the server's next
    message is `http.disconnect` (uvicorn's receive() blocks until the connection drops;
    the same message `Request.is_disconnected()` looks for, without polling)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)   # a server that answers receive() at once: poll


async def _collect(gen: Generation, request: Request) -> tuple[str, GenerationResult] | None:
    """The whole answer of a non-streaming request, or None when the client disconnected
    first: then the engine request is cancelled (closing events() aborts it) at once, not
    after the answer nobody will read."""
    work = asyncio.ensure_future(_drain(gen))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            await gen.aclose()   # events() may not have started yet
    return None if work.cancelled() else work.result()


def create_app(ctx: Any) -> FastAPI:
    """The HTTP front door's app for one daemon (ctx.inference is the inference core)."""
    app = FastAPI(title="musad", openapi_url=None, docs_url=None, redoc_url=None)
    errors.install(app)
    auth = HttpAuth(ctx)
    core = ctx.inference

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        caller = await auth.caller(request)
        limits = core.limits_of(caller.actor)
        data = [{"id": d.name, "object": "model", "created": (d.ready_unix_ms // 1000) or int(ctx.started_at),
                 "owned_by": "musad"}
                for d in ctx.deployments.all() if d.state is State.READY and d.engine is not None
                and limits.allows_model(d.name)]
        return JSONResponse({"object": "list", "data": data})

    async def _open(request: Request, kind: type[BaseModel], prefix: str):
        caller = await auth.caller(request)
        body = await _body(request, kind)
        if isinstance(body, ChatCompletionRequest):
            prompt, messages = None, tuple((m.role, m.text()) for m in body.messages)
        else:
            prompt, messages = body.prompt_text(), ()
        req = InferenceRequest(body.model, prompt, messages, body.sampling(), f"{prefix}-{uuid.uuid4().hex}", "http")
        try:
            gen = await core.open(req, caller)
        except RequestError as exc:
            raise errors.from_request_error(exc) from None
        return body, gen

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):  # noqa: ANN202
        body, gen = await _open(request, ChatCompletionRequest, "chatcmpl")
        created = int(time.time())
        if body.stream:
            def chunk(delta: dict | None, finish: str | None) -> dict:
                d = {} if delta is None else ({"content": delta["text"]} if "text" in delta else delta)
                out = {"id": gen.id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                       "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]}
                if body.include_usage:
                    out["usage"] = None
                return out
            return _Stream(gen, _sse(gen, chunk, body.include_usage, {"role": "assistant", "content": ""}))
        if (answer := await _collect(gen, request)) is None:
            return Response(status_code=499)   # nobody is listening
        text, result = answer
        return JSONResponse({
            "id": gen.id, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": FINISH[result.finish_reason]}],
            "usage": _usage(gen)})

    @app.post("/v1/completions")
    async def completions(request: Request):  # noqa: ANN202
        body, gen = await _open(request, CompletionRequest, "cmpl")
        created = int(time.time())
        if body.stream:
            def chunk(delta: dict | None, finish: str | None) -> dict:
                out = {"id": gen.id, "object": "text_completion", "created": created, "model": body.model,
                       "choices": [{"index": 0, "text": delta["text"] if delta else "", "logprobs": None,
                                    "finish_reason": finish}]}
                if body.include_usage:
                    out["usage"] = None
                return out
            return _Stream(gen, _sse(gen, chunk, body.include_usage, None))
        if (answer := await _collect(gen, request)) is None:
            return Response(status_code=499)   # nobody is listening
        text, result = answer
        return JSONResponse({
            "id": gen.id, "object": "text_completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": FINISH[result.finish_reason]}],
            "usage": _usage(gen)})

    return errors.BodyLimit(app)
