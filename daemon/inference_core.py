"""The one inference path behind every transport (gRPC Inference.Generate, the HTTP front
door): request checks, the caller's limits, the engine, usage and the audit record.

A transport turns its wire request into an `InferenceRequest` and calls
`InferenceCore.open(request, caller)`, which either raises `RequestError` (a `Status` and
one sentence; `LimitError` adds the OpenAI error code and Retry-After) or returns a
`Generation` whose `events()` yields the engine's `TextDelta`s and then its
`GenerationResult`. Before the result is handed to the transport, the request's usage row
and audit record are durable (what a client was told is on disk); a request that ends
without a result (the client went away, an error) is recorded in the background, with the
prompt tokens its deltas carried and the completion tokens streamed so far. Closing
`events()` early cancels the request in the engine within one step.

Audit records keep digests (SHA-256) of the prompt and completion, never the texts, unless
`audit.store_prompts` is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping

from .engine.api import (EngineClosedError, FinishReason, GenerationRequest, GenerationResult,
                         InvalidRequestError, QueueFullError, TextDelta, sampling_from_fields)
from .errors import RequestError, Status, no_model, shown
from .limits import NO_LIMITS, KeyLimits, LimitExceeded, Limiter, Ticket
from .trust.caller import Caller
from .usage import UsageLog, UsageRecord

log = logging.getLogger(__name__)

AUDIT_ACTION = "inference.Generate"
MAX_REQUEST_ID_CHARS = 128   # echoed in every message and audited
MAX_CHAT_MESSAGES = 4096     # per request
CHAT_ROLES = ("system", "user", "assistant", "tool")


class LimitError(RequestError):
    """Refused by the caller's limits: RESOURCE_EXHAUSTED, with the OpenAI error code
    (rate_limit_exceeded or insufficient_quota) and the seconds to wait."""

    def __init__(self, message: str, openai_code: str, retry_after_s: int) -> None:
        super().__init__(Status.RESOURCE_EXHAUSTED, message)
        self.openai_code = openai_code
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class InferenceRequest:
    """A request as any transport hands it over (before validation)."""

    model: str
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] = ()
    sampling: Mapping[str, Any] = field(default_factory=dict)   # by SamplingParams field name
    request_id: str = ""       # the id the client sees; "" = a fresh one
    transport: str = "grpc"    # grpc | http (audited)


def _audit_name(name: str) -> str:
    return name if len(name) <= MAX_REQUEST_ID_CHARS else shown(name)


class InferenceCore:
    """Built once per daemon (ctx.inference). Event-loop only."""

    def __init__(self, ctx: Any, usage: UsageLog,
                 limits_of: Callable[[str], KeyLimits] = lambda actor: NO_LIMITS) -> None:
        self.ctx = ctx
        self.usage = usage
        self.limits_of = limits_of     # key name -> its limits (the token store)
        self.limiter = Limiter(usage.tokens_since)
        self._background: set[asyncio.Task] = set()

    # -- admission ------------------------------------------------------------------------

    def _check(self, req: InferenceRequest, caller: Caller) -> GenerationRequest:
        eng = self.ctx.config.engine
        if not req.model:
            raise RequestError(Status.INVALID_ARGUMENT, "Say which model to use: `model` is empty.")
        if req.prompt and req.messages:
            raise RequestError(Status.INVALID_ARGUMENT, "Send either `prompt` or `messages`, not both.")
        if not req.prompt and not req.messages:
            raise RequestError(Status.INVALID_ARGUMENT, "The prompt is empty: send a prompt or chat messages.")
        if len(req.request_id) > MAX_REQUEST_ID_CHARS:
            raise RequestError(Status.INVALID_ARGUMENT, f"request_id is {len(req.request_id):,} characters; "
                               f"at most {MAX_REQUEST_ID_CHARS} are allowed.")
        if len(req.messages) > MAX_CHAT_MESSAGES:
            raise RequestError(Status.INVALID_ARGUMENT, f"{len(req.messages):,} chat messages given; "
                               f"at most {MAX_CHAT_MESSAGES} are allowed.")
        for role, _ in req.messages:
            if role not in CHAT_ROLES:
                raise RequestError(Status.INVALID_ARGUMENT,
                                   f"Chat role {shown(role)} is not one of {', '.join(CHAT_ROLES)}.")
        try:
            sampling = sampling_from_fields(req.sampling, max_tokens_limit=eng.max_tokens,
                                            max_stop_strings=eng.max_stop_strings)
        except InvalidRequestError as exc:
            raise RequestError(Status.INVALID_ARGUMENT, str(exc)) from None
        return GenerationRequest(request_id=req.request_id, prompt=req.prompt or None, messages=req.messages,
                                 sampling=sampling, cache_scope=self._cache_scope(caller))

    def _cache_scope(self, caller: Caller) -> str:
        """Requests share cached prompt prefixes within this scope: by default the caller (its
        token name or certificate CN), so one caller cannot time another's prompts through
        the cache; engine.prefix_cache_scope = "model" shares them across callers."""
        return "" if self.ctx.config.engine.prefix_cache_scope == "model" else caller.actor

    def _engine(self, model: str, limits: KeyLimits):
        if not limits.allows_model(model):   # reads as absent (engine_for's own NOT_FOUND)
            raise no_model(model)
        return self.ctx.deployments.engine_for(model)

    async def open(self, req: InferenceRequest, caller: Caller) -> "Generation":
        """Checks, admits and starts `req` for `caller`; raises RequestError before anything
        reaches the engine when it is refused (audited either way)."""
        generated = not req.request_id
        if generated:
            req = InferenceRequest(req.model, req.prompt, req.messages, req.sampling, uuid.uuid4().hex, req.transport)
        gen = Generation(self, req, caller, generated)
        ticket: Ticket | None = None
        stream = None
        try:
            greq = self._check(req, caller)
            limits = self.limits_of(caller.actor)
            engine = self._engine(req.model, limits)
            gen.counted = True   # the model exists for this key: usage is recorded from here on
            try:
                await self.limiter.load_day(caller.actor, limits)
                ticket = self.limiter.admit(caller.actor, limits)
            except LimitExceeded as exc:
                gen.outcome_usage = "rate_limited"
                raise LimitError(exc.message, exc.code, exc.retry_after_s) from None
            try:
                stream = engine.generate(greq)
                first = await stream.__anext__()   # request errors surface here, before any message
            except InvalidRequestError as exc:
                raise RequestError(Status.INVALID_ARGUMENT, str(exc)) from None
            except QueueFullError as exc:
                waiting = engine.stats().waiting
                retry = max(1, math.ceil(waiting / max(1, engine.info.max_batch)))
                raise LimitError(f"Model {shown(req.model)} is busy: {exc}; retry after {retry} s.",
                                 "server_busy", retry) from None
            except EngineClosedError as exc:
                raise RequestError(Status.FAILED_PRECONDITION, str(exc)) from None
        except RequestError as exc:
            if stream is not None:
                await stream.aclose()
            gen.ticket = ticket
            try:
                await gen.refused(exc)
            except Exception:  # the refusal stands even if it could not be recorded
                log.exception("could not record a refused inference request")
            raise
        except asyncio.CancelledError:
            # the client left while the request waited for its first token (queued, or in
            # prefill): abort it in the engine and record it like any cancelled request
            gen.ticket = ticket
            if stream is not None:
                await stream.aclose()
            gen._record_cancelled()
            raise
        gen.start(stream, first, ticket)
        return gen

    def _spawn(self, coro) -> None:  # noqa: ANN001
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording an inference request failed: %s", task.exception())

    async def wait_recorded(self) -> None:
        """Waits for records still being written in the background (shutdown, tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


class Generation:
    """One admitted request: iterate `events()`; `id` is the id the client sees."""

    def __init__(self, core: InferenceCore, req: InferenceRequest, caller: Caller, generated: bool) -> None:
        self.core = core
        self.req = req
        self.caller = caller
        self.id = req.request_id
        # The usage row's key: the request id when the server made it, else a fresh one (a
        # gRPC client may send the same id twice; each request is counted).
        self.usage_id = req.request_id if req.transport == "http" or generated else uuid.uuid4().hex
        self.counted = False
        self.outcome_usage = "error"
        self.ticket: Ticket | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason = ""
        self._completion = hashlib.sha256()
        self._completion_text: list[str] = []
        self._stream = None
        self._first = None
        self._recorded = False
        self._started = False

    def start(self, stream, first, ticket: Ticket | None) -> None:  # noqa: ANN001
        self._stream, self._first, self.ticket = stream, first, ticket
        if isinstance(first, TextDelta):   # counted even if events() never runs (aclose)
            self.prompt_tokens = first.prompt_tokens

    async def events(self) -> AsyncIterator[TextDelta | GenerationResult]:
        """TextDeltas, then the GenerationResult (recorded durably before it is yielded)."""
        item = self._first
        store = self.core.ctx.config.audit.store_prompts
        self._started = True
        try:
            while True:
                if isinstance(item, TextDelta):
                    self.prompt_tokens = item.prompt_tokens or self.prompt_tokens
                    self.completion_tokens += item.tokens
                    self._completion.update(item.text.encode("utf-8"))
                    if store:
                        self._completion_text.append(item.text)
                    yield item
                else:
                    m = item.metrics
                    self.prompt_tokens, self.completion_tokens = m.prompt_tokens, m.completion_tokens
                    self.finish_reason = item.finish_reason.value
                    failed = item.finish_reason is FinishReason.ERROR
                    await self._record("error" if failed else "ok", "failed" if failed else "ok", item.error)
                    yield item
                    return
                item = await self._stream.__anext__()
        finally:
            await self._stream.aclose()   # aborts the request in the engine if it has not finished
            if not self._recorded:        # the client went away (or the stream broke) first
                self._record_cancelled()

    async def aclose(self) -> None:
        """Releases a generation whose events() never ran (the client left first)."""
        if self._started or self._recorded or self._stream is None:
            return
        self._started = True
        await self._stream.aclose()
        self._record_cancelled()

    async def refused(self, exc: RequestError) -> None:
        """Records a request refused before the engine (awaited: the refusal follows it)."""
        outcome = "denied" if isinstance(exc, LimitError) and exc.openai_code != "server_busy" else "failed"
        await self._record(self.outcome_usage, outcome, exc.message)

    def _record_cancelled(self) -> None:
        """Records a request that ended without its result (the client left), in the background."""
        self.finish_reason = self.finish_reason or FinishReason.CANCELLED.value
        self.core._spawn(self._record("cancelled", "ok", ""))

    async def _record(self, usage_outcome: str, audit_outcome: str, error: str) -> None:
        """Usage row and audit record, both durable on return; releases the limit ticket."""
        self._recorded = True
        core, req = self.core, self.req
        tokens = self.prompt_tokens + self.completion_tokens
        try:
            jobs = []
            if self.counted:
                jobs.append(core.usage.record(UsageRecord(
                    self.usage_id, self.caller.actor, req.model, self.prompt_tokens, self.completion_tokens,
                    usage_outcome)))
            if req.model:
                jobs.append(core.ctx.audit.record(action=AUDIT_ACTION, target=_audit_name(req.model),
                                                  params=self._audit_params(), outcome=audit_outcome,
                                                  error=error, caller=self.caller))
            await asyncio.gather(*jobs)
        finally:
            if self.ticket is not None:
                self.ticket.finish(tokens)

    def _audit_params(self) -> dict[str, Any]:
        req = self.req
        prompt = req.prompt or "\n".join(f"{r}: {c}" for r, c in req.messages)
        params: dict[str, Any] = {
            "request_id": _audit_name(req.request_id), "transport": req.transport,
            "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
            "completion_sha256": self._completion.hexdigest(),
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
        }
        if self.core.ctx.config.audit.store_prompts:
            params["prompt"] = prompt
            params["completion"] = "".join(self._completion_text)
        return params
