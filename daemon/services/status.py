"""daemon.errors.Status -> grpc.StatusCode: the one place a refusal becomes a gRPC status."""

from __future__ import annotations

import grpc

from ..errors import RequestError, Status

_GRPC = {s: grpc.StatusCode[s.name] for s in Status}


def grpc_code(code: Status) -> grpc.StatusCode:
    return _GRPC[code]


async def abort(context: grpc.aio.ServicerContext, exc: RequestError) -> None:
    """Ends the RPC with the refusal's status and sentence (raises, as context.abort does)."""
    await context.abort(_GRPC[exc.code], exc.message)
