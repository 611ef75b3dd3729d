"""Inference.Generate: validate a request, stream the engine's text deltas, then the result.

Bad input is refused with INVALID_ARGUMENT and a sentence before anything is queued; an
unknown model is NOT_FOUND, a model not READY is FAILED_PRECONDITION, a full queue is
RESOURCE_EXHAUSTED with retry advice. A client that cancels the RPC cancels the request:
the engine frees its KV blocks within one step. Every Generate is audited off the stream's
critical path (a background task; the caller identity travels in the copied context).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import uuid

import grpc

from musaops.v1 import inference_pb2, inference_pb2_grpc

from ..auth import current_caller
from ..deployments import shown
from ..engine.api import (EngineClosedError, FinishReason, GenerationRequest, GenerationResult,
                          InvalidRequestError, QueueFullError, SamplingParams, TextDelta)

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
MAX_REQUEST_ID_CHARS = 128   # echoed in every delta and audited
MAX_STOP_CHARS = 256         # per stop string
MAX_CHAT_MESSAGES = 4096     # per request
CHAT_ROLES = ("system", "user", "assistant", "tool")
_FINISH_PB = {
    FinishReason.STOP: inference_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: inference_pb2.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: inference_pb2.FINISH_REASON_CANCELLED,
    FinishReason.ERROR: inference_pb2.FINISH_REASON_ERROR,
}


class _Invalid(Exception):
    """A request field is out of range (INVALID_ARGUMENT)."""


def sampling_from_pb(sp: inference_pb2.SamplingParams, max_tokens_limit: int,
                     max_stop_strings: int) -> SamplingParams:
    """Proto sampling parameters -> validated SamplingParams (raises _Invalid with a sentence)."""
    def opt(name: str, default: float) -> float:
        return getattr(sp, name) if sp.HasField(name) else default

    temperature = opt("temperature", 1.0)
    top_p = opt("top_p", 1.0)
    top_k = int(opt("top_k", 0))
    rep = opt("repetition_penalty", 1.0)
    freq = opt("frequency_penalty", 0.0)
    pres = opt("presence_penalty", 0.0)
    max_tokens = sp.max_tokens or min(DEFAULT_MAX_TOKENS, max_tokens_limit)
    if not math.isfinite(temperature) or temperature < 0:
        raise _Invalid(f"temperature must be 0 (greedy) or more; got {temperature}.")
    if not (0 < top_p <= 1):
        raise _Invalid(f"top_p must be in (0, 1]; got {top_p}.")
    if top_k < 0:
        raise _Invalid(f"top_k must be 0 (off) or more; got {top_k}.")
    if not math.isfinite(rep) or rep <= 0:
        raise _Invalid(f"repetition_penalty must be above 0 (1 = off); got {rep}.")
    for name, v in (("frequency_penalty", freq), ("presence_penalty", pres)):
        if not (-2 <= v <= 2):
            raise _Invalid(f"{name} must be between -2 and 2; got {v}.")
    if max_tokens > max_tokens_limit:
        raise _Invalid(f"max_tokens is {max_tokens}; this node allows at most {max_tokens_limit}.")
    if len(sp.stop) > max_stop_strings:
        raise _Invalid(f"{len(sp.stop)} stop strings given; at most {max_stop_strings} are allowed.")
    if any(not s for s in sp.stop):
        raise _Invalid("stop strings must not be empty.")
    longest = max((len(s) for s in sp.stop), default=0)
    if longest > MAX_STOP_CHARS:
        raise _Invalid(f"A stop string is {longest:,} characters; each may have at most {MAX_STOP_CHARS}.")
    return SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=rep,
                          frequency_penalty=freq, presence_penalty=pres,
                          seed=sp.seed if sp.HasField("seed") else None, max_tokens=max_tokens,
                          stop=tuple(sp.stop), ignore_eos=sp.ignore_eos)


def _audit_name(name: str) -> str:
    """A name or id for the audit log: as sent, or cut short by shown() when huge."""
    return name if len(name) <= MAX_REQUEST_ID_CHARS else shown(name)


def result_pb(result: GenerationResult) -> inference_pb2.GenerateResult:
    m = result.metrics
    return inference_pb2.GenerateResult(
        usage=inference_pb2.Usage(prompt_tokens=m.prompt_tokens, completion_tokens=m.completion_tokens),
        timings=inference_pb2.Timings(queue_ms=m.queue_s * 1e3, ttft_ms=m.ttft_s * 1e3,
                                      mean_itl_ms=m.mean_itl_s * 1e3, total_ms=m.total_s * 1e3),
        finish_reason=_FINISH_PB[result.finish_reason], error=result.error, stop=result.stop)


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self._audit_tasks: set[asyncio.Task] = set()

    def _limits(self) -> tuple[int, int]:
        eng = getattr(self.ctx.config, "engine", None)
        return int(getattr(eng, "max_tokens", 4096)), int(getattr(eng, "max_stop_strings", 16))

    def _engine(self, model: str):
        deps = self.ctx.deployments
        if hasattr(deps, "engine_for"):
            try:
                return deps.engine_for(model)
            except Exception as exc:  # deployments.RequestError carries a status code
                code = getattr(exc, "code", None)
                if code is None:
                    raise
                raise _Status(code, str(exc)) from exc
        dep = deps.get(model)
        if dep is None:
            raise _Status(grpc.StatusCode.NOT_FOUND, f"There is no model named {shown(model)} on this node.")
        if dep.engine is None:
            raise _Status(grpc.StatusCode.FAILED_PRECONDITION, f"Model {shown(model)} is not deployed and READY.")
        return dep.engine

    def _audit(self, model: str, request_id: str, prompt_text: str, prompt_tokens: int,
               completion_tokens: int, finish: str, outcome: str, error: str = "") -> None:
        audit = getattr(self.ctx, "audit", None)
        if audit is None:
            return
        params = {"request_id": _audit_name(request_id),
                  "prompt_sha256": hashlib.sha256(prompt_text.encode("utf-8")).hexdigest(),
                  "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "finish_reason": finish}
        cfg = getattr(self.ctx.config, "audit", None)
        if getattr(cfg, "store_prompts", False):
            params["prompt"] = prompt_text
        # A background task: the stream never waits for the audit write.
        task = asyncio.get_running_loop().create_task(
            audit.record(action="inference.Generate", target=_audit_name(model), params=params, outcome=outcome,
                         error=error))
        self._audit_tasks.add(task)
        task.add_done_callback(self._audit_done)

    def _audit_done(self, task: asyncio.Task) -> None:
        self._audit_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("audit of inference.Generate failed: %s", task.exception())

    async def Generate(self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext):
        rid = request.request_id or uuid.uuid4().hex
        prompt_text = request.prompt or "\n".join(f"{m.role}: {m.content}" for m in request.messages)
        prompt_tokens = completion_tokens = 0
        finish, outcome, error = "", "failed", ""
        try:
            try:
                req = self._request(request, rid)
                engine = self._engine(request.model)
                stream = engine.generate(req)
                first = await stream.__anext__()  # request errors surface here, before any message
            except _Invalid as exc:
                raise _Status(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
            except InvalidRequestError as exc:
                raise _Status(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
            except QueueFullError as exc:
                waiting = engine.stats().waiting
                retry = max(1, math.ceil(waiting / max(1, engine.info.max_batch)))
                raise _Status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"Model {shown(request.model)} is busy: {exc}; retry after {retry} s.") from exc
            except EngineClosedError as exc:
                raise _Status(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
            item = first
            try:
                while True:
                    if isinstance(item, TextDelta):
                        completion_tokens += item.tokens
                        yield inference_pb2.GenerateResponse(request_id=rid, text=item.text, tokens=item.tokens)
                    else:
                        m = item.metrics
                        prompt_tokens, completion_tokens = m.prompt_tokens, m.completion_tokens
                        finish = item.finish_reason.value
                        outcome = "failed" if item.finish_reason is FinishReason.ERROR else "ok"
                        error = item.error
                        yield inference_pb2.GenerateResponse(
                            request_id=rid, result=result_pb(item),
                            tokens=max(0, m.completion_tokens - completion_tokens))
                        return
                    item = await stream.__anext__()
            finally:
                await stream.aclose()  # aborts the request if it has not finished
        except _Status as st:
            error = st.message
            await context.abort(st.code, st.message)
        except asyncio.CancelledError:
            finish, outcome = FinishReason.CANCELLED.value, "ok"
            raise
        finally:
            if request.model:
                if not finish and not error:  # the client went away mid-stream
                    finish, outcome = FinishReason.CANCELLED.value, "ok"
                self._audit(request.model, rid, prompt_text, prompt_tokens, completion_tokens,
                            finish, outcome, error)

    def _request(self, request: inference_pb2.GenerateRequest, rid: str) -> GenerationRequest:
        max_tokens, max_stops = self._limits()
        if not request.model:
            raise _Invalid("Say which model to use: `model` is empty.")
        if request.prompt and request.messages:
            raise _Invalid("Send either `prompt` or `messages`, not both.")
        if not request.prompt and not request.messages:
            raise _Invalid("The prompt is empty: send a prompt or chat messages.")
        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            raise _Invalid(f"request_id is {len(request.request_id):,} characters; "
                           f"at most {MAX_REQUEST_ID_CHARS} are allowed.")
        if len(request.messages) > MAX_CHAT_MESSAGES:
            raise _Invalid(f"{len(request.messages):,} chat messages given; "
                           f"at most {MAX_CHAT_MESSAGES} are allowed.")
        for m in request.messages:
            if m.role not in CHAT_ROLES:
                raise _Invalid(f"Chat role {m.role!r} is not one of {', '.join(CHAT_ROLES)}.")
        sampling = sampling_from_pb(request.sampling, max_tokens, max_stops)
        return GenerationRequest(request_id=rid, prompt=request.prompt or None,
                                 messages=tuple((m.role, m.content) for m in request.messages),
                                 sampling=sampling, cache_scope=self._cache_scope())

    def _cache_scope(self) -> str:
        """Requests share cached prompt prefixes within this scope: by default the caller (its
        token name or certificate CN), so one caller cannot time another's prompts through
        the cache; engine.prefix_cache_scope = "model" shares them across callers."""
        eng = getattr(self.ctx.config, "engine", None)
        return "" if getattr(eng, "prefix_cache_scope", "caller") == "model" else current_caller().actor


class _Status(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
