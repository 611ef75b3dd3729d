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

from ..context import DaemonContext
from ..engine.api import (EngineClosedError, FinishReason, InvalidRequestError, QueueFullError,
                          TextDelta)
from ..errors import RequestError, shown
from ..trust.caller import current_caller
from .inference_convert import audit_name, delta_pb, generation_request, result_pb
from .status import grpc_code

log = logging.getLogger(__name__)


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self._audit_tasks: set[asyncio.Task] = set()

    def _audit(self, model: str, request_id: str, prompt_text: str, prompt_tokens: int,
               completion_tokens: int, finish: str, outcome: str, error: str = "") -> None:
        params = {"request_id": audit_name(request_id),
                  "prompt_sha256": hashlib.sha256(prompt_text.encode("utf-8")).hexdigest(),
                  "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "finish_reason": finish}
        if self.ctx.config.audit.store_prompts:
            params["prompt"] = prompt_text
        # A background task: the stream never waits for the audit write.
        task = asyncio.get_running_loop().create_task(
            self.ctx.audit.record(action="inference.Generate", target=audit_name(model), params=params,
                                  outcome=outcome, error=error))
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
                req = generation_request(request, rid, self.ctx.config.engine, self._cache_scope())
                engine = self.ctx.deployments.engine_for(request.model)
                stream = engine.generate(req)
                first = await stream.__anext__()  # request errors surface here, before any message
            except RequestError as exc:
                raise _Status(grpc_code(exc.code), exc.message) from exc
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
                        yield delta_pb(rid, item)
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

    def _cache_scope(self) -> str:
        """Requests share cached prompt prefixes within this scope: by default the caller (its
        token name or certificate CN), so one caller cannot time another's prompts through
        the cache; engine.prefix_cache_scope = "model" shares them across callers."""
        return "" if self.ctx.config.engine.prefix_cache_scope == "model" else current_caller().actor


class _Status(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
