"""Group commit: one writer thread commits what many callers queue, in shared transactions.

A caller hands one item to `submit()` (awaited on an event loop) or `submit_sync()` (blocking,
from any other thread). The writer thread takes the queued items in arrival order, up to
`max_batch` at a time, and passes them to `commit(items)` in one call (the owner's one durable
transaction), which returns one result per item. Each caller then gets its own item's result,
or, when `commit` raised, the error `fail(exc)` builds (every caller of that batch learns it).
Callers on an event loop are woken with one call per loop per batch. A caller cancelled while
waiting does not withdraw its item: it is committed all the same.

The audit log (hash chain) and the usage log (rows per request) each own one writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from typing import Any, Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 2000          # items per transaction (records of the audit log, rows of usage)
_STOP = object()

# What the queue holds per caller: (item, its event loop or None, its future: an asyncio
# future when the loop is set, a concurrent one when it is None).
_Entry = tuple[Any, "asyncio.AbstractEventLoop | None", Any]


class GroupCommitWriter(Generic[T, R]):
    """One writer thread named `name` committing queued items through `commit`."""

    def __init__(self, commit: Callable[[list[T]], Sequence[R]],
                 fail: Callable[[Exception], BaseException], *, name: str,
                 max_batch: int = MAX_BATCH) -> None:
        self._commit = commit
        self._fail = fail
        self.name = name
        self.max_batch = max_batch
        self.closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def submit(self, item: T) -> R:
        """Queues `item`; returns its result once its batch is committed (or raises)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((item, loop, fut))
        return await fut

    def submit_sync(self, item: T, timeout: float | None = 60.0) -> R:
        """Blocking `submit()` for threads and the CLI (never call it on the event loop)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((item, None, fut))
        return fut.result(timeout)

    def close(self) -> None:
        """Commits what is queued, then stops the thread (the owner refuses new items)."""
        if self.closed:
            return
        self.closed = True
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stop = False
        while not stop:
            entry = get()
            if entry is _STOP:
                break
            batch: list[_Entry] = [entry]
            while len(batch) < self.max_batch:
                try:
                    entry = get_nowait()
                except queue.Empty:
                    break
                if entry is _STOP:
                    stop = True
                    break
                batch.append(entry)
            try:
                results: Sequence[Any] = self._commit([e[0] for e in batch])
            except Exception as exc:  # the database refused: every caller in the batch learns it
                log.exception("%s: the batch of %d could not be committed", self.name, len(batch))
                results = [self._fail(exc)] * len(batch)
            _deliver(batch, results)


def _deliver(batch: list[_Entry], results: Sequence[Any]) -> None:
    """From the writer thread: resolves blocking callers, wakes each event loop once."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
    for (_, loop, fut), r in zip(batch, results):
        if loop is None:
            if isinstance(r, BaseException):
                fut.set_exception(r)
            else:
                fut.set_result(r)
        else:
            by_loop.setdefault(loop, []).append((fut, r))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # that loop has closed; nobody is waiting any more
            pass


def _settle(items: list[tuple[asyncio.Future, Any]]) -> None:
    """On the event loop: one call resolves a whole batch's futures."""
    for fut, result in items:
        if fut.done():   # the caller was cancelled: its item stands
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
