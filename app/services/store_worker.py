"""StoreWorker: the console's database calls on one worker thread.

The GUI thread never opens a session. The worker may also open the Store itself (pass a
factory), so SQLAlchemy is imported and the SQLite file opened off the GUI thread, after
the window has painted: this keeps the console's cold start short.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class StoreWorker:
    """`submit(method, *args, done=cb)` runs `store.method(*args)` on the worker thread;
    cb(result, error) runs there too (wrap it with GuiInvoker on the Qt side). Errors come
    back as values (a sentence), never raised."""

    def __init__(self, store_or_factory: Any, paused: bool = False) -> None:
        """paused=True holds every job until resume(): the console resumes once its window
        has painted, so opening the database does not compete with start-up for the GIL."""
        self._gate = threading.Event()
        if not paused:
            self._gate.set()
        self._store = None if callable(store_or_factory) else store_or_factory
        self._factory: Callable[[], Any] | None = store_or_factory if self._store is None else None
        self._open_error = ""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-store")
        self._lock = threading.Lock()
        self._closed = False

    @property
    def store(self) -> Any:
        """The Store (opened on first use; only call this on the worker thread)."""
        if self._store is None and self._factory is not None and not self._open_error:
            try:
                self._store = self._factory()
            except Exception as e:
                self._open_error = f"The console's local store is unusable: {e}"
        if self._store is None:
            raise RuntimeError(self._open_error or "no store")
        return self._store

    def submit(self, method: str, *args: Any,
               done: Callable[[Any, str], None] | None = None) -> Future | None:
        with self._lock:
            if self._closed:
                return None

            def call() -> Any:
                self._gate.wait()
                try:
                    result, error = getattr(self.store, method)(*args), ""
                except Exception as e:  # errors as values
                    result, error = None, str(e) or type(e).__name__
                if done is not None:
                    done(result, error)
                return result

            return self._pool.submit(call)

    def resume(self) -> None:
        self._gate.set()

    def close(self) -> None:
        """Finishes queued writes, then joins the worker thread."""
        with self._lock:
            self._closed = True
        self._gate.set()
        self._pool.shutdown(wait=True)
        if self._store is not None:
            self._store.close()
