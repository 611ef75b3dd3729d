"""NodeHub -> Qt signals, queued to the GUI thread.

The hub calls the listener methods on its own thread; each one just emits a signal of this
QObject (which lives in the GUI thread), so Qt queues the call to the GUI event loop. The
payloads are the hub's immutable dataclasses, safe to share. `GuiInvoker` does the same for
any callable (used for store results coming back from the store's worker thread).
"""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject, Signal, Slot


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

    # NodeHub listener interface (called on the hub thread).
    def on_status(self, status) -> None:
        self.status.emit(status)

    def on_snapshots(self, node_id: str, snapshots) -> None:
        self.snapshots.emit(node_id, snapshots)

    def on_models(self, node_id: str, models) -> None:
        self.models.emit(node_id, models)

    def on_deploy_event(self, event) -> None:
        self.deploy_event.emit(event)

    def on_undeploy_done(self, result) -> None:
        self.undeploy_done.emit(result)

    def on_tokens(self, chunk) -> None:
        self.tokens.emit(chunk)

    def on_generation_done(self, done) -> None:
        self.generation_done.emit(done)

    def on_command_error(self, error) -> None:
        self.command_error.emit(error)

    def on_node_removed(self, node_id: str) -> None:
        self.node_removed.emit(node_id)


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
