"""The thread pool for work a caller's request makes the node do on a CPU: tokenising a
prompt and rendering its chat template.

It is not the event loop's default executor, which the daemon's own work uses (token checks,
database reads, model scans): a flood of expensive prompts queues here and never in front
of an authentication or a health answer. Admission is each engine's (a request being
prepared counts against its `max_queue`); `MAX_PENDING` is only the node-wide backstop,
above what the default limits admit (4 models x 256 queued), past which a request is
refused as busy instead of queued.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .api import QueueFullError

WORKERS = max(2, min(8, (os.cpu_count() or 2) // 2))
MAX_PENDING = 4096   # jobs queued or running at once, node-wide

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pending = 0


def pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="musad-user")
        return _pool


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` on the user-work pool; QueueFullError when MAX_PENDING jobs are ahead.
    A job counts until it has finished, even when its caller went away first."""
    global _pending
    with _lock:
        if _pending >= MAX_PENDING:
            raise QueueFullError(f"{_pending} prompts are already being prepared on this node")
        _pending += 1
    try:
        job = pool().submit(fn, *args)
    except BaseException:
        _done(None)
        raise
    job.add_done_callback(_done)
    return await asyncio.wrap_future(job)


def _done(_job: Any) -> None:
    global _pending
    with _lock:
        _pending -= 1
