"""Relaying a wrapped server-streaming handler's responses, for the interceptors.

A handler given to grpc.aio may be an async generator, a plain iterable, or a coroutine that
writes with `context.write()`; an interceptor that wraps it (auth, malformed) must pass on
all three, and close an async generator as soon as the stream ends or is cancelled.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any


async def relay(responses: Any) -> AsyncIterator[Any]:
    """Yield what a unary-stream / stream-stream handler produced."""
    if inspect.isawaitable(responses):  # the handler writes with context.write()
        await responses
    elif hasattr(responses, "__aiter__"):
        try:
            async for item in responses:
                yield item
        finally:  # a cancelled stream closes the handler's generator now, not at GC
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                await aclose()
    elif responses is not None:
        for item in responses:
            yield item
