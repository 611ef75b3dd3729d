"""Console test fixtures: a started NodeHub (with or without the Qt bridge) that is always
stopped and joined at teardown, and a thread-leak check for the console's own threads.

Daemons come from tests/conftest.py (`daemon`, `make_daemon`): real musad servers on port 0.
"""

from __future__ import annotations

import os
import queue
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MUSA_CONSOLE_KEYRING", "0")   # tests never write to a real OS keyring

import pytest  # noqa: E402

from musaops.app.services.node_hub import Backoff, HubConfig, NodeHub  # noqa: E402

CONSOLE_THREADS = ("NodeHub", "console-store")

# Fast reconnects and a short telemetry interval keep the tests quick; nothing else differs.
FAST = HubConfig(telemetry_interval_ms=200, backfill_seconds=60, batch_interval_s=0.05,
                 rpc_timeout_s=5.0, backoff=Backoff(initial=0.1, cap=0.5))


def console_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.is_alive() and t.name.startswith(CONSOLE_THREADS)]


def load_all_audit_pages(qtbot, view) -> None:
    """Page an AuditView's table (fetchMore) until every node's log is read to the end."""
    def loaded() -> bool:
        m = view.model
        if m.canFetchMore():
            m.fetchMore()
        return m.exhausted and not m.loading
    qtbot.waitUntil(loaded, timeout=30_000)


class Recorder:
    """A Qt-free hub listener: every call lands in a queue, read with `wait_for`."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str):
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args: self.events.put((name, args))

    def wait_for(self, predicate, timeout: float = 20.0):
        """Returns the first (name, args) matching predicate(name, args), or fails."""
        import time
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching hub event within {timeout} s; seen "
                                     f"{[n for n, _ in self.seen][-20:]}")
            try:
                item = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(item)
            if predicate(*item):
                return item


@pytest.fixture
def recorder_hub():
    rec = Recorder()
    hub = NodeHub(rec, FAST)
    hub.start()
    yield hub, rec
    hub.stop()
    assert not hub.running, "NodeHub thread still alive after stop()"


@pytest.fixture
def qt_hub(qtbot):
    """(hub, bridge) with the Qt bridge as listener; stopped and joined at teardown."""
    from musaops.app.qt.bridge import HubBridge
    bridge = HubBridge()
    hub = NodeHub(bridge, FAST)
    hub.start()
    yield hub, bridge
    hub.stop()
    assert not hub.running, "NodeHub thread still alive after stop()"


@pytest.fixture
def models_console(qtbot, qt_hub):
    """(hub, bridge, view): a shown ModelsView on qt_hub; its poll timer stopped at teardown."""
    from musaops.app.qt.views.models_view import ModelsView
    hub, bridge = qt_hub
    view = ModelsView(hub, bridge)
    qtbot.addWidget(view)
    view.resize(1280, 800)
    view.show()
    yield hub, bridge, view
    view.stop()
    assert not view._poll.isActive()


def connect_models_node(qtbot, hub, view, daemon, name: str) -> str:
    """Adds `daemon` to the hub and waits until the Models view's directory has it online."""
    from musaops.app.core import NodeAddress
    node_id = hub.add_node(NodeAddress("127.0.0.1", daemon.port, name=name))
    qtbot.waitUntil(lambda: view.directory.online(node_id), timeout=20_000)
    return node_id


def open_main_window(qtbot, qt_hub, address):
    """A console MainWindow (no store) at its minimum size, shown, with the node at `address`
    online; the caller shuts it down."""
    from musaops.app.core import ConnectionState
    from musaops.app.qt.main_window import MainWindow
    from musaops.app.qt.sizes import MIN_HEIGHT, MIN_WIDTH
    hub, bridge = qt_hub
    w = MainWindow(hub, bridge, None)
    qtbot.addWidget(w)
    w.resize(MIN_WIDTH, MIN_HEIGHT)
    w.show()
    w.connect_address(address)
    qtbot.waitUntil(lambda: any(s.state is ConnectionState.ONLINE for s in w.state.statuses.values()),
                    timeout=20_000)
    return w


@pytest.fixture
def node_view(qtbot, qt_hub, daemon):
    """A shown NodeView following the `daemon` fixture: (hub, bridge, state, view, node id)."""
    from musaops.app.core import ConnectionState, NodeAddress, NodeStatus
    from musaops.app.qt.fleet_state import FleetState
    from musaops.app.qt.views.node_view import NodeView

    hub, bridge = qt_hub
    state = FleetState(bridge)
    view = NodeView(state)
    qtbot.addWidget(view)
    view.resize(1200, 700)
    view.show()
    view.set_active(True)
    address = NodeAddress("127.0.0.1", daemon.port, name="local")
    nid = hub.new_id("node")
    state.ensure(NodeStatus(nid, address, ConnectionState.CONNECTING))
    hub.add_node(address, nid)
    yield hub, bridge, state, view, nid
    view.stop()
    state.stop()
    assert not view.panel.timer.isActive()


@pytest.fixture
def no_console_thread_leaks():
    before = set(console_threads())
    yield
    leaked = set(console_threads()) - before
    assert not leaked, f"console threads left running: {leaked}"
