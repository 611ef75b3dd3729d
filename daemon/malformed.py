"""Malformed request bytes get INVALID_ARGUMENT with a sentence, not UNKNOWN.

grpc decodes a request before any handler runs, so corrupt bytes (a truncated message, a
string field that is not UTF-8) surface as UNKNOWN "Unexpected <class DecodeError>". This
interceptor, the innermost one (after auth has admitted the caller), gives each handler a
deserializer that returns a `Malformed` marker instead of raising, and a behaviour that turns
the marker into INVALID_ARGUMENT.
"""

from __future__ import annotations

import inspect
from typing import Any

import grpc

from .rpc_streams import relay


class Malformed:
    """Stands in for a request that could not be decoded."""

    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary-request handlers once per method (cached) so decoding never raises."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, _wrap(handler, method))
            self._cache[method] = cached
        return cached[1]


def _wrap(handler, method: str):  # noqa: ANN001, ANN202
    decode = handler.request_deserializer

    def deserialize(data: bytes):  # noqa: ANN202
        try:
            return decode(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, bad UTF-8 in a string field
            return Malformed(f"The {method} request is not a valid protobuf message ({exc}); "
                             "is the client built from the same .proto files?")

    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary(request, context):  # noqa: ANN001, ANN202
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            result = inner(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=deserialize,
                                                   response_serializer=handler.response_serializer)
    inner = handler.unary_stream

    async def stream(request, context):  # noqa: ANN001, ANN202
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        async for item in relay(inner(request, context)):
            yield item

    return grpc.unary_stream_rpc_method_handler(stream, request_deserializer=deserialize,
                                                response_serializer=handler.response_serializer)
