"""The main window: left navigation, one stacked view per section, toolbar, status bar,
alerts dock, connections and settings dialogs.

It wires the parts together and owns nothing slow: RPCs go through the hub, database work
through the store worker, and each panel redraws on its own timer. The views are one static
table, `VIEWS`: navigation, the stack, Ctrl+1..6, icons and `musa-console --view` follow it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (QApplication, QFrame, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QMainWindow, QScrollArea, QSizePolicy,
                               QStackedWidget, QToolBar, QWidget)

from ..core.alerts import AlertThresholds
from ..core.nodes import ConnectionState, NodeAddress, NodeProfile, NodeStatus
from ..services.node_hub import NodeHub
from ..services.store_worker import StoreWorker
from . import theme as theme_mod
from .bridge import GuiInvoker, HubBridge
from .fleet_state import FleetState
from .sizes import MIN_HEIGHT, MIN_WIDTH
from .views.about import show_about
from .views.alerts_panel import AlertsPanel
from .views.audit_view import AuditView
from .views.connections_dialog import ConnectionEditor, ConnectionsDialog
from .views.fleet_view import FleetView
from .views.keys_view import KeysView
from .views.models_view import ModelsView
from .views.playground_view import PlaygroundView
from .views.settings_dialog import SettingsDialog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class View:
    key: str                 # also the icon's name (resources/icons/KEY.svg) and --view's value
    title: str
    build: Callable[["MainWindow"], QWidget] | None   # None: built on first use (node_view)
    scrolls: bool = True     # wider than the window, the page scrolls instead of stretching it


# The views, in navigation order (Ctrl+1 ... Ctrl+6).
VIEWS: tuple[View, ...] = (
    View("fleet", "Fleet", lambda w: FleetView(w.state), scrolls=False),
    View("node", "Node", None, scrolls=False),   # pyqtgraph: imported when first shown
    View("models", "Models", lambda w: ModelsView(w.hub, w.bridge, directory=w.state)),
    View("playground", "Playground",
         lambda w: PlaygroundView(w.hub, w.bridge, directory=w.state, store=w.store)),
    View("audit", "Audit", lambda w: AuditView(w.hub, w.bridge, directory=w.state, store=w.store)),
    View("keys", "Keys & usage", lambda w: KeysView(w.hub, w.bridge, directory=w.state)),
)
VIEW_KEYS = tuple(v.key for v in VIEWS)


def profile_node_id(profile_id: int) -> str:
    return f"profile-{profile_id}"


class MainWindow(QMainWindow):
    def __init__(self, hub: NodeHub, bridge: HubBridge, store: StoreWorker | None = None,
                 settings: dict[str, Any] | None = None, theme: str = "light") -> None:
        super().__init__()
        self.hub = hub
        self.bridge = bridge
        self.store = store
        self.settings = dict(settings or {})
        self.theme_name = theme
        self.profiles: dict[str, NodeProfile] = {}   # node_id -> saved profile
        self.invoke = GuiInvoker(self)
        self.connections_dialog: ConnectionsDialog | None = None
        self.dialog: QWidget | None = None           # the open modal-ish dialog, for tests

        self.setWindowTitle("musa-console")
        self.setWindowIcon(theme_mod.icon("app", "#1f5fd1", 64))
        self.resize(1280, 800)
        self.setMinimumSize(MIN_WIDTH, MIN_HEIGHT)   # every view is laid out to work down to it
        thresholds = AlertThresholds(**self.settings.get("alert_thresholds", {})) \
            if self.settings.get("alert_thresholds") else AlertThresholds()
        self.state = FleetState(bridge, thresholds=thresholds, parent=self)
        bridge.command_error.connect(self._on_command_error)

        # Views.
        self._node_view = None   # built on first use: it imports pyqtgraph (cold start)
        self._node_page = QWidget()
        self.views: dict[str, QWidget] = {}
        self.pages: dict[str, QWidget] = {}
        for v in VIEWS:
            self.views[v.key] = v.build(self) if v.build is not None else self._node_page
            if v.scrolls:   # no stretching the window past 1280 px
                page = QScrollArea()
                page.setObjectName("viewPage")
                page.setWidgetResizable(True)
                page.setFrameShape(QFrame.Shape.NoFrame)
                page.setWidget(self.views[v.key])
                self.pages[v.key] = page
        self.fleet_view: FleetView = self.views["fleet"]
        self.fleet_view.node_activated.connect(self.open_node)

        self.nav = QListWidget()
        self.nav.setObjectName("navigation")
        self.nav.setIconSize(QSize(20, 20))
        self.nav.setFixedWidth(176)
        self.stack = QStackedWidget()
        for v in VIEWS:
            QListWidgetItem(v.title, self.nav).setData(Qt.ItemDataRole.UserRole, v.key)
            self.stack.addWidget(self.pages.get(v.key, self.views[v.key]))
        self.nav.currentRowChanged.connect(self._nav_changed)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.nav)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.alerts_panel = AlertsPanel(self.state, self)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.alerts_panel)
        self.alerts_panel.hide()

        self._build_toolbar()
        self._build_status_bar()
        self._build_shortcuts()
        self.apply_theme(theme)
        self.nav.setCurrentRow(0)

    # --- construction ----------------------------------------------------------------------

    @property
    def node_view(self):
        """The Node view, created the first time it is needed."""
        if self._node_view is None:
            from .views.node_view import NodeView
            view = NodeView(self.state)
            colors = theme_mod.THEMES[self.theme_name]
            theme_mod.apply_charts(colors)
            view.panel.set_theme(colors["chart_bg"], colors["chart_fg"])
            row = VIEW_KEYS.index("node")
            self.stack.removeWidget(self._node_page)
            self._node_page.deleteLater()
            self.stack.insertWidget(row, view)
            self.views["node"] = view
            self._node_view = view
            if self.nav.currentRow() == row:
                self.stack.setCurrentIndex(row)
        return self._node_view

    def _build_toolbar(self) -> None:
        tb = QToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setIconSize(QSize(18, 18))
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(tb)
        self.act_add = QAction("Add node", self, shortcut=QKeySequence("Ctrl+N"))
        self.act_add.triggered.connect(self.add_connection)
        self.act_connections = QAction("Connections", self)
        self.act_connections.triggered.connect(self.show_connections)
        self.act_alerts = QAction("Alerts", self, shortcut=QKeySequence("Ctrl+L"), checkable=True)
        self.act_alerts.toggled.connect(self.alerts_panel.setVisible)
        self.alerts_panel.visibilityChanged.connect(self.act_alerts.setChecked)
        self.act_settings = QAction("Settings", self, shortcut=QKeySequence("Ctrl+,"))
        self.act_settings.triggered.connect(self.show_settings)
        # Names the theme it switches to ("Dark theme" while light), so it is an action, not a
        # toggle whose checked look would say the opposite of its label.
        self.act_theme = QAction("Dark theme", self, shortcut=QKeySequence("Ctrl+T"))
        self.act_theme.triggered.connect(
            lambda: self.apply_theme("light" if self.theme_name == "dark" else "dark", save=True))
        self.act_about = QAction("About", self, shortcut=QKeySequence("F1"))
        self.act_about.triggered.connect(lambda: setattr(self, "dialog", show_about(self)))
        for a in (self.act_add, self.act_connections, self.act_alerts):
            tb.addAction(a)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        tb.addWidget(spacer)
        for a in (self.act_settings, self.act_theme, self.act_about):
            tb.addAction(a)
        self.toolbar = tb

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.sb_nodes = QLabel()
        self.sb_gpus = QLabel()
        self.sb_tps = QLabel()
        self.sb_alerts = QLabel()
        self.sb_alerts.setObjectName("statusAlerts")
        self.sb_message = QLabel()
        sb.addWidget(self.sb_message, 1)
        for w in (self.sb_nodes, self.sb_gpus, self.sb_tps, self.sb_alerts):
            sb.addPermanentWidget(w)
        self.status_timer = QTimer(self)
        self.status_timer.setInterval(1000)
        self.status_timer.timeout.connect(self.update_status_bar)
        self.status_timer.start()
        self.state.alerts_changed.connect(self.update_status_bar)
        self.state.status_changed.connect(self._status_message)
        self.update_status_bar()

    def _build_shortcuts(self) -> None:
        self.shortcuts = []
        for i, key in enumerate(VIEW_KEYS):
            sc = QShortcut(QKeySequence(f"Ctrl+{i + 1}"), self)
            sc.activated.connect(lambda k=key: self.show_view(k))
            self.shortcuts.append(sc)

    # --- navigation ------------------------------------------------------------------------

    def show_view(self, key: str) -> None:
        self.nav.setCurrentRow(VIEW_KEYS.index(key))

    def current_view(self) -> str:
        return VIEW_KEYS[self.stack.currentIndex()]

    def _nav_changed(self, row: int) -> None:
        if row < 0:
            return
        if VIEW_KEYS[row] == "node":
            self.node_view.set_active(True)
        elif self._node_view is not None:
            self._node_view.set_active(False)
        self.stack.setCurrentIndex(row)

    def open_node(self, node_id: str) -> None:
        self.node_view.show_node(node_id)
        self.show_view("node")

    # --- nodes -----------------------------------------------------------------------------

    def connect_address(self, address: NodeAddress, node_id: str | None = None) -> str:
        """Adds an ad hoc (not saved) connection."""
        node_id = node_id or self.hub.new_id("node")
        self.state.ensure(NodeStatus(node_id, address, ConnectionState.CONNECTING))
        self.hub.add_node(address, node_id)
        return node_id

    def load_profiles(self, profiles: list[NodeProfile]) -> None:
        for p in profiles:
            nid = profile_node_id(p.id)
            self.profiles[nid] = p
            self.connect_address(p.address, nid)

    def add_connection(self) -> None:
        editor = ConnectionEditor(None, self)
        editor.accepted.connect(lambda: self.save_profile(editor.build()))
        self.dialog = editor
        editor.open()

    def show_connections(self) -> None:
        dlg = ConnectionsDialog(list(self.profiles.values()), self)
        dlg.save_requested.connect(self.save_profile)
        dlg.remove_requested.connect(self.remove_profile)
        self.connections_dialog = dlg
        self.dialog = dlg
        dlg.open()

    def save_profile(self, profile: NodeProfile) -> None:
        """Saves through the store worker, then connects (or reconnects) the node."""
        if self.store is None:
            self._apply_profile(profile)
            return
        self.store.submit("save_profile", profile,
                          done=lambda saved, err: self.invoke(self._profile_saved, saved, err))

    def _profile_saved(self, saved: NodeProfile | None, error: str) -> None:
        if error or saved is None:
            self.sb_message.setText(f"Could not save the connection: {error}")
            return
        self._apply_profile(saved)

    def _apply_profile(self, profile: NodeProfile) -> None:
        nid = profile_node_id(profile.id) if profile.id else self.hub.new_id("node")
        existed = nid in self.profiles
        self.profiles[nid] = profile
        if existed:
            self.hub.update_node(nid, profile.address)
        else:
            self.connect_address(profile.address, nid)
        if self.hub.oplog is not None:
            self.hub.oplog.record("connection.save", profile.address.target)
        self._refresh_connections_dialog()

    def remove_profile(self, profile: NodeProfile) -> None:
        nid = profile_node_id(profile.id)
        self.profiles.pop(nid, None)
        self.hub.remove_node(nid)
        if self.store is not None and profile.id:
            self.store.submit("delete_profile", profile.id)
        if self.hub.oplog is not None and profile.id:
            self.hub.oplog.record("connection.remove", profile.address.target)
        self._refresh_connections_dialog()

    def _refresh_connections_dialog(self) -> None:
        if self.connections_dialog is not None:
            self.connections_dialog.set_profiles(list(self.profiles.values()))

    # --- settings and theme ----------------------------------------------------------------

    def show_settings(self) -> None:
        dlg = SettingsDialog(self.state.alerts.thresholds, self.theme_name, self)
        dlg.accepted.connect(lambda: self._settings_accepted(dlg))
        self.dialog = dlg
        dlg.open()

    def _settings_accepted(self, dlg: SettingsDialog) -> None:
        th = dlg.thresholds()
        self.state.set_thresholds(th)
        self.settings["alert_thresholds"] = asdict(th)
        if self.store is not None:
            self.store.submit("set_setting", "alert_thresholds", asdict(th))
        self.apply_theme(dlg.theme.currentText(), save=True)

    def apply_theme(self, name: str, save: bool = False) -> None:
        app = QApplication.instance()
        colors = theme_mod.apply(app, name)
        self.theme_name = name
        other = "Light" if name == "dark" else "Dark"
        self.act_theme.setText(f"{other} theme")
        self.act_theme.setToolTip(f"Switch to the {other.lower()} theme (Ctrl+T)")
        fg = colors["text"]
        for action, icon in ((self.act_add, "add"), (self.act_connections, "connections"),
                             (self.act_alerts, "alert"), (self.act_settings, "settings"),
                             (self.act_theme, "theme"), (self.act_about, "about")):
            action.setIcon(theme_mod.icon(icon, fg))
        for i, key in enumerate(VIEW_KEYS):
            self.nav.item(i).setIcon(theme_mod.icon(key, colors["muted"]))
        if self._node_view is not None:
            self._node_view.panel.set_theme(colors["chart_bg"], colors["chart_fg"])
        if save and self.store is not None:
            self.store.submit("set_setting", "theme", name)

    # --- status bar ------------------------------------------------------------------------

    def update_status_bar(self) -> None:
        s = self.state.summary()
        self.sb_nodes.setText(f"Nodes online: {s['online']:.0f}/{s['nodes']:.0f}")
        self.sb_gpus.setText(f"GPUs: {s['gpus']:.0f}")
        self.sb_tps.setText(f"Fleet tokens/s: {s['tokens_per_second']:,.0f}")
        n = int(s["alerts"])
        self.sb_alerts.setText(f"Alerts: {n}")
        if self.sb_alerts.property("alert") != (n > 0):   # re-polishing is slow: on change only
            self.sb_alerts.setProperty("alert", n > 0)
            self.sb_alerts.style().unpolish(self.sb_alerts)
            self.sb_alerts.style().polish(self.sb_alerts)

    def _status_message(self, node_id: str) -> None:
        st = self.state.statuses.get(node_id)
        if st is None:
            return
        if st.state is not ConnectionState.ONLINE and st.last_error:
            # DEGRADED too: a silent node is as much the operator's business as a gone one
            self.post_message(st.address.label, st.last_error)
        elif st.state is ConnectionState.ONLINE and self.sb_message.text().startswith(
                f"{st.address.label}"):
            self.post_message(st.address.label, "online")

    def _on_command_error(self, error) -> None:
        label = self.state.statuses[error.node_id].address.label \
            if error.node_id in self.state.statuses else error.node_id
        self.post_message(label, error.message)

    def post_message(self, label: str, text: str) -> None:
        """The status bar's one message about a node. The node is named once (a sentence
        that already names it is not prefixed again); the node's state and a failed command
        report the same error through different listeners, so a message equal to the one
        shown is not posted again."""
        message = text if label in text else f"{label}: {text}"
        if message == self.sb_message.text():
            return
        self.sb_message.setText(message)
        self.sb_message.setToolTip(message)

    # --- shutdown --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stops every timer this window owns (the hub and store are the caller's)."""
        self.status_timer.stop()
        self.fleet_view.stop()
        if self._node_view is not None:
            self._node_view.stop()
        self.state.stop()
        for view in self.views.values():
            stop = getattr(view, "stop", None) or getattr(view, "shutdown", None)
            if callable(stop) and view not in (self.fleet_view, self._node_view):
                try:
                    stop()
                except Exception:
                    log.exception("stopping a view")

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)
