"""NodeHub -> Qt signals, delivered on the GUI thread in order and in short slices.

The hub calls the listener methods on its own thread. Each call is appended to one FIFO
queue, and the first call into an empty queue posts a single wake-up to the GUI thread,
which then emits the signals of everything queued (receivers on the GUI thread are called
directly). So 200 nodes reporting in the same instant cost one queued event instead of one
per batch and receiver, the order of the hub's calls is kept (tokens before the stream's
end, a node's last batch before its removal), and a drain that takes longer than
`SLICE_S` stops and continues on the next turn of the event loop: timers and repaints are
never held up by a burst. Calls made on the GUI thread itself are emitted at once.
The payloads are the hub's immutable dataclasses, safe to share. `GuiInvoker` calls any
callable on the GUI thread (used for store results coming back from the store's worker
thread).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, Signal, SignalInstance, Slot


class HubBridge(QObject):
    status = Signal(object)              # NodeStatus
    snapshots = Signal(str, object)      # node_id, tuple[Snapshot]
    models = Signal(str, object)         # node_id, tuple[ModelEntry]
    deploy_event = Signal(object)        # DeployEvent
    undeploy_done = Signal(object)       # UndeployResult
    tokens = Signal(object)              # TokenChunk
    generation_done = Signal(object)     # GenerationDone
    command_error = Signal(object)       # CommandError
    node_removed = Signal(str)
    audit_page = Signal(str, object)     # op_id, audit_feed.Page
    audit_verified = Signal(str, object)  # op_id, audit_feed.VerifyOutcome
    keys_answer = Signal(str, object)    # op_id, keys_feed.KeysAnswer
    transfer = Signal(object)            # core.transfers.TransferEvent

    SLICE_S = 0.004   # longest stretch of queued calls delivered in one event

    _wake = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._gui_thread = threading.get_ident()
        self._queue: deque[tuple[SignalInstance, tuple]] = deque()
        self._lock = threading.Lock()
        self._woken = False     # a wake-up is posted and its drain has not emptied the queue
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)

    def pending(self) -> int:
        """Calls queued and not yet delivered (for tests and diagnostics)."""
        return len(self._queue)

    def _post(self, signal: SignalInstance, *args: Any) -> None:
        if threading.get_ident() == self._gui_thread:
            signal.emit(*args)
            return
        with self._lock:
            self._queue.append((signal, args))
            if self._woken:
                return
            self._woken = True
        self._wake.emit()

    @Slot()
    def _drain(self) -> None:
        end = time.perf_counter() + self.SLICE_S
        queue, lock = self._queue, self._lock
        while True:
            with lock:
                if not queue:
                    self._woken = False
                    return
                signal, args = queue.popleft()
            signal.emit(*args)
            if time.perf_counter() > end:
                self._wake.emit()   # queued: the rest follows after timers and paints
                return

    # NodeHub listener interface (called on the hub thread).
    def on_status(self, status) -> None:
        self._post(self.status, status)

    def on_snapshots(self, node_id: str, snapshots) -> None:
        self._post(self.snapshots, node_id, snapshots)

    def on_models(self, node_id: str, models) -> None:
        self._post(self.models, node_id, models)

    def on_deploy_event(self, event) -> None:
        self._post(self.deploy_event, event)

    def on_undeploy_done(self, result) -> None:
        self._post(self.undeploy_done, result)

    def on_tokens(self, chunk) -> None:
        self._post(self.tokens, chunk)

    def on_generation_done(self, done) -> None:
        self._post(self.generation_done, done)

    def on_command_error(self, error) -> None:
        self._post(self.command_error, error)

    def on_node_removed(self, node_id: str) -> None:
        self._post(self.node_removed, node_id)

    def on_audit_page(self, op_id: str, page) -> None:
        self._post(self.audit_page, op_id, page)

    def on_audit_verified(self, op_id: str, outcome) -> None:
        self._post(self.audit_verified, op_id, outcome)

    def on_keys_answer(self, op_id: str, answer) -> None:
        self._post(self.keys_answer, op_id, answer)

    def on_transfer(self, event) -> None:
        self._post(self.transfer, event)


class GuiInvoker(QObject):
    """Calls a function on the GUI thread, from any thread: `invoker(fn, *args)`."""

    _call = Signal(object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._call.connect(self._run)

    def __call__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._call.emit(fn, args)

    @Slot(object, object)
    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        fn(*args)
