"""The main window end to end against a real daemon: navigation and shortcuts, saved
connections through the store worker, settings, theme, About, status bar, clean shutdown."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt, QTimer

from musaops.app.core import ConnectionState, NodeAddress
from musaops.app.qt.main_window import VIEW_KEYS, MainWindow
from musaops.app.services.store import NodeProfile, Store, StoreWorker

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def window(qtbot, qt_hub, tmp_path, no_console_thread_leaks):
    hub, bridge = qt_hub
    store = StoreWorker(Store(tmp_path / "console.sqlite3"))
    w = MainWindow(hub, bridge, store)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()
    assert not [t for t in w.findChildren(QTimer) if t.isActive()], "a timer still runs"
    store.close()


def test_navigation_shortcuts_and_views(qtbot, window) -> None:
    window.activateWindow()
    for i, key in enumerate(VIEW_KEYS):
        qtbot.keyClick(window, getattr(Qt.Key, f"Key_{i + 1}"), Qt.KeyboardModifier.ControlModifier)
        assert window.current_view() == key
    # Every view reads the window's one FleetState.
    for key in ("models", "playground", "audit"):
        assert window.views[key].directory is window.state
    assert not window.node_view.panel.timer.isActive() or window.current_view() == "node"


def test_saved_connection_connects_and_persists_then_removal(qtbot, window, daemon, tmp_path) -> None:
    address = NodeAddress("127.0.0.1", daemon.port, name="saved-node")
    window.save_profile(NodeProfile(0, address))
    qtbot.waitUntil(lambda: any(s.state is ConnectionState.ONLINE and s.address.name == "saved-node"
                                for s in window.state.statuses.values()), timeout=20_000)
    [nid] = window.profiles
    assert nid.startswith("profile-")
    qtbot.waitUntil(lambda: window.sb_nodes.text() == "Nodes online: 1/1", timeout=5000)
    # It is in the store (read on a second connection, never the GUI thread's business).
    check = Store(tmp_path / "console.sqlite3")
    assert [p.address.name for p in check.list_profiles()] == ["saved-node"]
    # Edit through the Connections dialog path: same id, new name, reconnects.
    window.show_connections()
    dlg = window.connections_dialog
    assert dlg.list.count() == 1 and "saved-node" in dlg.list.item(0).text()
    profile = window.profiles[nid]
    window.save_profile(NodeProfile(profile.id, NodeAddress("127.0.0.1", daemon.port, name="renamed")))
    qtbot.waitUntil(lambda: window.state.statuses[nid].address.name == "renamed", timeout=20_000)
    qtbot.waitUntil(lambda: "renamed" in dlg.list.item(0).text())
    # Remove: gone from hub, fleet and store.
    window.remove_profile(window.profiles[nid])
    qtbot.waitUntil(lambda: nid not in window.state.statuses, timeout=10_000)
    qtbot.waitUntil(lambda: check.list_profiles() == [], timeout=10_000)
    check.close()
    dlg.close()


def test_add_connection_dialog_validates_and_explains(qtbot, window) -> None:
    window.add_connection()
    editor = window.dialog
    editor.address.setText("no-port-here")
    editor.accept()
    assert editor.isVisible() and "HOST:PORT" in editor.error.text()
    editor.address.setText("127.0.0.1:1")
    editor.name.setText("nothing-there")
    editor.accept()
    assert not editor.isVisible()
    qtbot.waitUntil(lambda: any(s.address.name == "nothing-there" and s.state is ConnectionState.OFFLINE
                                for s in window.state.statuses.values()), timeout=20_000)
    # The reason is where the operator looks: the status bar (and the fleet row).
    qtbot.waitUntil(lambda: "Cannot reach 127.0.0.1:1" in window.sb_message.text(), timeout=5000)
    qtbot.waitUntil(lambda: window.sb_alerts.text() == "Alerts: 1", timeout=5000)


def test_settings_theme_and_about(qtbot, window, tmp_path) -> None:
    window.show_settings()
    dlg = window.dialog
    dlg.temperature.setValue(70)
    dlg.theme.setCurrentText("dark")
    dlg.accept()
    assert window.state.alerts.thresholds.temperature_celsius == 70
    # The theme action names the theme it switches to.
    assert window.theme_name == "dark" and window.act_theme.text() == "Light theme"
    window.act_theme.trigger()
    assert window.theme_name == "light" and window.act_theme.text() == "Dark theme"
    # The Alerts toggle shows its checked state (styled :checked) while the panel is shown.
    window.act_alerts.trigger()
    assert window.act_alerts.isChecked() and window.alerts_panel.isVisible()
    button = window.toolbar.widgetForAction(window.act_alerts)
    assert button.isChecked()
    window.act_alerts.trigger()
    assert not window.act_alerts.isChecked() and not button.isChecked()
    check = Store(tmp_path / "console.sqlite3")
    qtbot.waitUntil(lambda: check.get_setting("theme") == "light", timeout=5000)
    assert check.get_setting("alert_thresholds")["temperature_celsius"] == 70
    check.close()
    window.act_about.trigger()
    about = window.dialog
    assert "PySide6" in about.text() and "musa-ops" in about.text()
    about.close()


def test_command_error_reaches_the_status_bar(qtbot, window) -> None:
    window.hub.refresh_models("node-404")
    qtbot.waitUntil(lambda: "Unknown node" in window.sb_message.text(), timeout=5000)
