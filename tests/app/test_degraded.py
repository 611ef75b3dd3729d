"""A node whose connection stays open but goes silent is shown DEGRADED, then recovers on its
own; one that stays silent past the keepalive is shown OFFLINE and reconnects once it answers.

The stall is real: the console talks to a real musad through `TcpRelay`, whose pause stops
every byte in both directions while the TCP connections stay open.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from PySide6.QtCore import Qt, QTimer

from musaops.app.core import ConnectionState, NodeAddress, NodeStatus
from musaops.app.qt.fleet_state import FleetState
from musaops.app.qt.models.fleet_model import COL_STATE
from musaops.app.qt.views.fleet_view import FleetView
from musaops.app.services.node_hub import Backoff, HubConfig, NodeHub
from tcp_relay import TcpRelay

pytestmark = pytest.mark.timeout(180)

# conftest's FAST, and telemetry counts as stopped after 1 s without a snapshot.
QUICK = HubConfig(telemetry_interval_ms=200, backfill_seconds=60, batch_interval_s=0.05,
                  rpc_timeout_s=5.0, backoff=Backoff(initial=0.1, cap=0.5), stale_after_s=1.0)


@pytest.fixture
def relayed(qtbot, daemon):
    """Builds (hub, state, view, relay, node id) for a hub config; everything is stopped at
    teardown."""
    from musaops.app.qt.bridge import HubBridge
    made = []

    def build(config: HubConfig):
        bridge = HubBridge()
        hub = NodeHub(bridge, config)
        hub.start()
        state = FleetState(bridge)
        view = FleetView(state)
        qtbot.addWidget(view)
        relay = TcpRelay("127.0.0.1", daemon.port)
        made.append((hub, state, view, relay))
        address = NodeAddress("127.0.0.1", relay.port, name="relayed")
        nid = hub.new_id("node")
        state.ensure(NodeStatus(nid, address, ConnectionState.CONNECTING))
        hub.add_node(address, nid)
        return hub, state, view, relay, nid

    yield build
    for hub, state, view, relay in made:
        relay.resume()
        hub.stop()
        assert not hub.running
        view.stop()
        state.stop()
        relay.close()


class _Ticks:
    """Counts a 20 ms GUI timer: if the GUI thread blocked, the count would stand still."""

    def __init__(self) -> None:
        self.n = 0
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        self.n += 1


def _state_cell(view: FleetView, nid: str) -> tuple[str, str]:
    view.refresh()
    index = view.model.index(view.model.row_of(nid), COL_STATE)
    return index.data(), index.data(Qt.ItemDataRole.ToolTipRole)


def _wait_online_with_data(qtbot, state: FleetState, nid: str) -> None:
    qtbot.waitUntil(lambda: state.statuses[nid].state is ConnectionState.ONLINE, timeout=20_000)
    qtbot.waitUntil(lambda: nid in state.latest, timeout=20_000)


def test_stalled_stream_turns_degraded_then_online_again_on_resume(qtbot, relayed) -> None:
    # Keepalive far away: this stall ends before grpc would give the connection up, so the
    # very same stream must carry on when the bytes flow again.
    hub, state, view, relay, nid = relayed(replace(QUICK, keepalive_time_ms=120_000))
    _wait_online_with_data(qtbot, state, nid)
    assert _state_cell(view, nid)[0] == "Online"

    ticks = _Ticks()
    relay.pause()
    qtbot.waitUntil(lambda: state.statuses[nid].state is ConnectionState.DEGRADED,
                    timeout=20_000)
    text, tip = _state_cell(view, nid)
    assert text.startswith("Degraded\nNo telemetry from 127.0.0.1:") and "nothing arrives" in text
    assert "State: degraded" in tip and "Last error: No telemetry from" in tip
    before = ticks.n
    qtbot.waitUntil(lambda: ticks.n > before + 5, timeout=10_000)   # the GUI keeps running

    samples = len(state.history[nid].devices[0])
    relay.resume()
    qtbot.waitUntil(lambda: state.statuses[nid].state is ConnectionState.ONLINE, timeout=20_000)
    qtbot.waitUntil(lambda: len(state.history[nid].devices[0]) > samples, timeout=20_000)
    assert _state_cell(view, nid)[0] == "Online"
    assert relay.connections == 1, "the stalled stream itself should have carried on"
    ticks.timer.stop()


def test_stall_past_keepalive_turns_offline_then_reconnects_on_resume(qtbot, relayed) -> None:
    # Short keepalive: a silent connection is given up after 2-4 s (DEGRADED comes after 1 s);
    # while the relay holds every new connection too, GetInfo runs into its deadline and the
    # node stays OFFLINE.
    hub, state, view, relay, nid = relayed(replace(
        QUICK, keepalive_time_ms=2_000, keepalive_timeout_ms=2_000, rpc_timeout_s=2.0))
    _wait_online_with_data(qtbot, state, nid)

    seen: list[ConnectionState] = []
    state.status_changed.connect(lambda n: n == nid and seen.append(state.statuses[nid].state))
    ticks = _Ticks()
    relay.pause()
    qtbot.waitUntil(lambda: state.statuses[nid].state is ConnectionState.OFFLINE,
                    timeout=60_000)
    assert ConnectionState.DEGRADED in seen, f"never DEGRADED before OFFLINE: {seen}"
    text, tip = _state_cell(view, nid)
    assert text.startswith("Offline\n") and "127.0.0.1:" in text, text
    assert "Retrying in" in tip
    before = ticks.n
    qtbot.waitUntil(lambda: ticks.n > before + 5, timeout=10_000)

    samples = len(state.history[nid].devices[0])
    relay.resume()
    qtbot.waitUntil(lambda: state.statuses[nid].state is ConnectionState.ONLINE, timeout=30_000)
    qtbot.waitUntil(lambda: len(state.history[nid].devices[0]) > samples, timeout=20_000)
    assert _state_cell(view, nid)[0] == "Online"
    assert relay.connections >= 2
    ticks.timer.stop()


def test_main_window_status_bar_names_the_silent_node(qtbot, qt_hub, daemon, tmp_path) -> None:
    # The production rule (3 telemetry intervals, at least 3 s), through the main window.
    from musaops.app.qt.main_window import MainWindow
    from musaops.app.services.store import Store, StoreWorker

    hub, bridge = qt_hub
    store = StoreWorker(Store(tmp_path / "console.sqlite3"))
    window = MainWindow(hub, bridge, store)
    qtbot.addWidget(window)
    window.show()
    with TcpRelay("127.0.0.1", daemon.port) as relay:
        try:
            address = NodeAddress("127.0.0.1", relay.port, name="silent")
            nid = hub.new_id("node")
            window.state.ensure(NodeStatus(nid, address, ConnectionState.CONNECTING))
            hub.add_node(address, nid)
            _wait_online_with_data(qtbot, window.state, nid)
            relay.pause()
            qtbot.waitUntil(lambda: window.state.statuses[nid].state is ConnectionState.DEGRADED,
                            timeout=20_000)
            assert window.sb_message.text().startswith("silent: No telemetry from 127.0.0.1:")
            assert _state_cell(window.fleet_view, nid)[0].startswith("Degraded\nNo telemetry")
            relay.resume()
            qtbot.waitUntil(lambda: window.state.statuses[nid].state is ConnectionState.ONLINE,
                            timeout=30_000)
            qtbot.waitUntil(lambda: window.sb_message.text() == "silent: online", timeout=5_000)
        finally:
            relay.resume()
            window.shutdown()
            store.close()
