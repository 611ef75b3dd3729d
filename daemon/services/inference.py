"""Inference.Generate: the gRPC face of the inference core (daemon/inference_core.py).

The wire request becomes an `InferenceRequest`; the core checks it, applies the caller's
limits, starts it on the engine and records usage and the audit record (durable before the
final message is sent). Refusals arrive as `RequestError` and leave as their status code:
INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED (a full queue, or a
key's limits: the message names the limit and when to retry). A client that cancels the
RPC cancels the request: the engine frees its KV blocks within one step.
"""

from __future__ import annotations

import grpc

from musaops.v1 import inference_pb2, inference_pb2_grpc

from ..context import DaemonContext
from ..engine.api import CLIENT_STOPPED_READING, FinishReason, TextDelta
from ..errors import RequestError
from ..trust.caller import current_caller
from .inference_convert import delta_pb, inference_request, result_pb
from .status import grpc_code


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx

    async def Generate(self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext):
        try:
            gen = await self.ctx.inference.open(inference_request(request), current_caller())
        except RequestError as exc:
            retry = getattr(exc, "retry_after_s", None)   # a LimitError says when to retry
            if retry is not None:
                context.set_trailing_metadata((("retry-after", str(retry)),))
            await context.abort(grpc_code(exc.code), exc.message)
        rid = gen.id
        streamed = 0
        async for item in gen.events():
            if isinstance(item, TextDelta):
                streamed += item.tokens
                yield delta_pb(rid, item)
            elif item.finish_reason is FinishReason.ERROR and item.error.startswith(CLIENT_STOPPED_READING):
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, item.error)
            else:
                yield inference_pb2.GenerateResponse(
                    request_id=rid, result=result_pb(item),
                    tokens=max(0, item.metrics.completion_tokens - streamed))
