"""Keys & usage: the API keys of each node (role, limits, created, last used) with create,
edit limits and revoke, each confirmed first; and what the keys used: tokens per hour
stacked by key or by model, the top keys, totals for one node or the whole fleet, and a
CSV export. Everything goes through the NodeHub (`keys_call`), answers come back on
`bridge.keys_answer`; a secret is shown once, in the dialog that answers a create.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView, QBoxLayout, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
    QGroupBox, QHBoxLayout, QLabel, QLineEdit, QMessageBox, QPushButton, QSpinBox,
    QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from musaops.app.core.usage import (KeyEntry, KeyLimits, UsageBucket, hourly, top_keys, totals,
                                    usage_csv)
from musaops.app.services.keys_feed import KeysAnswer, KeysRequest

from ..charts.stacked_bars import StackedBars
from ..fleet_state import FleetState
from .banner import Banner
from .column_fit import ColumnFitter

ALL = ""   # the node picker's "All nodes" entry
RANGES = (("Last 24 hours", 24), ("Last 7 days", 24 * 7), ("Last 30 days", 24 * 30))
ROLES = ("client", "viewer", "operator", "auditor", "admin")
KEY_COLUMNS = ("Node", "Key", "Role", "State", "Limits", "Created", "Last used", "Expires")
# Columns that elide (full text in the tooltip) before the others give way, with their minimum.
KEY_ELASTIC = {0: 80, 1: 100, 4: 90}   # Node, Key, Limits
TOP_ELASTIC = {0: 90}                  # Key
SIDE_BY_SIDE_FROM = 1000   # the view's width from which the chart and the top keys share a row
TOP_COLUMNS = (("Key", "API key (top 20 by tokens)"), ("Requests", "requests that reached a model"),
               ("Prompt", "prompt tokens"), ("Completion", "completion tokens"), ("Errors", "failed requests"),
               ("429", "requests refused by a limit"), ("Nodes", "nodes the key was used on"))


def _when(ms: int, never: str = "never") -> str:
    if not ms:
        return never
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


class KeyDialog(QDialog):
    """Create a key (name, role, expiry, limits) or edit an existing key's limits."""

    def __init__(self, parent: QWidget, nodes: list[tuple[str, str]], key: KeyEntry | None = None,
                 node_id: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Edit limits" if key else "Create key")
        self.node = QComboBox()
        for nid, label in nodes:
            self.node.addItem(label, nid)
        if node_id:
            self.node.setCurrentIndex(max(0, self.node.findData(node_id)))
        self.name = QLineEdit(key.name if key else "")
        self.name.setPlaceholderText("team-a (letters, digits and ._@:-)")
        self.role = QComboBox()
        self.role.addItems(ROLES)
        self.expires = QDoubleSpinBox()
        self.expires.setRange(0, 3650)
        self.expires.setDecimals(0)
        self.expires.setSpecialValueText("never")
        self.expires.setSuffix(" days")
        lim = key.limits if key else KeyLimits()
        self.models = QLineEdit(",".join(lim.models))
        self.models.setPlaceholderText("every model (or: name1, name2)")
        self.rpm, self.tpm, self.concurrent = QSpinBox(), QSpinBox(), QSpinBox()
        for spin, value in ((self.rpm, lim.rpm), (self.tpm, lim.tpm), (self.concurrent, lim.concurrent)):
            spin.setRange(0, 2**31 - 1)
            spin.setSpecialValueText("no limit")
            spin.setValue(value)
        self.daily = QDoubleSpinBox()
        self.daily.setRange(0, 2**53)
        self.daily.setDecimals(0)
        self.daily.setSpecialValueText("no limit")
        self.daily.setValue(lim.daily_tokens)
        form = QFormLayout()
        form.addRow("Node", self.node)
        form.addRow("Name", self.name)
        if key is None:
            form.addRow("Role", self.role)
            form.addRow("Expires after", self.expires)
        else:
            self.node.setEnabled(False)
            self.name.setReadOnly(True)
        form.addRow("Models", self.models)
        form.addRow("Requests / minute", self.rpm)
        form.addRow("Tokens / minute", self.tpm)
        form.addRow("Requests at once", self.concurrent)
        form.addRow("Tokens / day (UTC)", self.daily)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Save limits…" if key else "Create…")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def limits(self) -> KeyLimits:
        models = tuple(m.strip() for m in self.models.text().split(",") if m.strip())
        return KeyLimits(models, self.rpm.value(), self.tpm.value(), self.concurrent.value(),
                         int(self.daily.value()))


class SecretDialog(QDialog):
    """The new key's secret, once, with a copy button."""

    def __init__(self, parent: QWidget, key: KeyEntry, secret: str, node_label: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("New key")
        self.secret = QLineEdit(secret)
        self.secret.setReadOnly(True)
        self.secret.setMinimumWidth(420)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy)
        row = QHBoxLayout()
        row.addWidget(self.secret, 1)
        row.addWidget(self.copy_button)
        note = QLabel(f"Key <b>{key.name}</b> ({key.role}) on {node_label}. This is the only time the secret "
                      "is shown: copy it now and keep it safe. Clients send it as "
                      "<code>Authorization: Bearer …</code>.")
        note.setWordWrap(True)
        done = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        done.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addLayout(row)
        layout.addWidget(done)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.secret.text())
        self.copy_button.setText("Copied")


class KeysView(QWidget):
    def __init__(self, hub: Any, bridge: Any, parent: QWidget | None = None,
                 directory: FleetState | None = None) -> None:
        super().__init__(parent)
        self.hub = hub
        self.directory = directory or FleetState(bridge, parent=self)
        self.keys: dict[str, tuple[KeyEntry, ...]] = {}
        self.buckets: dict[str, tuple[UsageBucket, ...]] = {}
        self.errors: dict[str, str] = {}
        self.ops: dict[str, Callable[[KeysAnswer], None]] = {}
        self.key_dialog: KeyDialog | None = None
        self.confirm_box: QMessageBox | None = None
        self.secret_dialog: SecretDialog | None = None
        self.last_secret = ""        # for tests; the view shows it only in secret_dialog
        self.range_until_ms = 0

        title = QLabel("Keys & usage")
        title.setStyleSheet("font-size: 18px; font-weight: 600;")
        self.node_box = QComboBox()
        self.node_box.addItem("All nodes", ALL)
        self.node_box.setMinimumWidth(180)
        self.refresh_button = QPushButton("Refresh")
        bar = QHBoxLayout()
        bar.addWidget(title)
        bar.addStretch(1)
        bar.addWidget(QLabel("Node"))
        bar.addWidget(self.node_box)
        bar.addWidget(self.refresh_button)
        self.banner = Banner(self)

        # keys
        self.keys_table = QTableWidget(0, len(KEY_COLUMNS))
        self.keys_table.setHorizontalHeaderLabels(KEY_COLUMNS)
        self.keys_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.keys_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.keys_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.keys_table.verticalHeader().setVisible(False)
        self.keys_fit = ColumnFitter(self.keys_table, KEY_ELASTIC, stretch=4)
        self.keys_table.setMinimumHeight(120)
        self.create_button = QPushButton("Create key…")
        self.edit_button = QPushButton("Edit limits…")
        self.revoke_button = QPushButton("Revoke…")
        key_buttons = QHBoxLayout()
        key_buttons.addWidget(self.create_button)
        key_buttons.addWidget(self.edit_button)
        key_buttons.addWidget(self.revoke_button)
        key_buttons.addStretch(1)
        keys_box = QGroupBox("Keys")
        kl = QVBoxLayout(keys_box)
        kl.addLayout(key_buttons)
        kl.addWidget(self.keys_table, 1)

        # usage
        self.range_box = QComboBox()
        for label, hours in RANGES:
            self.range_box.addItem(label, hours)
        self.stack_box = QComboBox()
        self.stack_box.addItem("by key", "key")
        self.stack_box.addItem("by model", "model")
        self.export_button = QPushButton("Export CSV…")
        self.totals_label = QLabel("")
        self.totals_label.setWordWrap(True)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Range"))
        controls.addWidget(self.range_box)
        controls.addWidget(QLabel("Tokens per hour (UTC)"))
        controls.addWidget(self.stack_box)
        controls.addStretch(1)
        controls.addWidget(self.export_button)
        self.chart = StackedBars()
        self.top_table = QTableWidget(0, len(TOP_COLUMNS))
        for c, (label, tip) in enumerate(TOP_COLUMNS):
            head = QTableWidgetItem(label)
            head.setToolTip(tip)
            self.top_table.setHorizontalHeaderItem(c, head)
        self.top_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.top_table.verticalHeader().setVisible(False)
        self.top_fit = ColumnFitter(self.top_table, TOP_ELASTIC, stretch=0)
        self.top_table.setMinimumHeight(110)
        self.charts = QBoxLayout(QBoxLayout.Direction.LeftToRight)   # or one above the other: resizeEvent
        self.charts.addWidget(self.chart, 2)
        self.charts.addWidget(self.top_table, 3)
        usage_box = QGroupBox("Usage")
        ul = QVBoxLayout(usage_box)
        ul.addLayout(controls)
        ul.addWidget(self.totals_label)
        ul.addLayout(self.charts, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.addLayout(bar)
        layout.addWidget(self.banner)
        layout.addWidget(keys_box, 2)
        layout.addWidget(usage_box, 3)

        bridge.keys_answer.connect(self._on_answer)
        self.refresh_button.clicked.connect(self.refresh)
        self.node_box.currentIndexChanged.connect(lambda _i: self._show())
        self.range_box.currentIndexChanged.connect(lambda _i: self.refresh_usage())
        self.stack_box.currentIndexChanged.connect(lambda _i: self._show_usage())
        self.create_button.clicked.connect(self.ask_create)
        self.edit_button.clicked.connect(self.ask_edit)
        self.revoke_button.clicked.connect(self.ask_revoke)
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.keys_table.itemSelectionChanged.connect(self._update_buttons)
        d = self.directory
        d.node_added.connect(self._node_changed)
        d.node_updated.connect(self._node_changed)
        d.node_removed.connect(self._node_removed)
        for nid in d.node_ids():
            self._node_changed(nid)
        self._update_buttons()

    # -- nodes ---------------------------------------------------------------------------------
    def _node_changed(self, node_id: str) -> None:
        i = self.node_box.findData(node_id)
        label = self.directory.label(node_id)
        if i < 0:
            self.node_box.addItem(label, node_id)
            if self.isVisible() and self.directory.online(node_id):
                self._ask(node_id)
        elif self.node_box.itemText(i) != label:
            self.node_box.setItemText(i, label)

    def _node_removed(self, node_id: str) -> None:
        i = self.node_box.findData(node_id)
        if i >= 0:
            self.node_box.removeItem(i)
        for d in (self.keys, self.buckets, self.errors):
            d.pop(node_id, None)
        self._show()

    def node_ids(self) -> list[str]:
        """The nodes in scope: the chosen one, or every node."""
        chosen = self.node_box.currentData()
        return [chosen] if chosen else self.directory.node_ids()

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802
        super().resizeEvent(event)
        wide = self.width() >= SIDE_BY_SIDE_FROM
        direction = QBoxLayout.Direction.LeftToRight if wide else QBoxLayout.Direction.TopToBottom
        if self.charts.direction() != direction:
            self.charts.setDirection(direction)

    def showEvent(self, event) -> None:  # noqa: ANN001, N802
        super().showEvent(event)
        self.refresh()

    # -- asking ----------------------------------------------------------------------------------
    def _call(self, node_id: str, req: KeysRequest, then: Callable[[KeysAnswer], None]) -> str:
        op_id = self.hub.new_id("keys")
        self.ops[op_id] = then
        self.hub.keys_call(node_id, req, op_id=op_id)
        return op_id

    def refresh(self) -> None:
        self.range_until_ms = 0
        for nid in self.directory.node_ids():
            self._ask(nid)

    def refresh_usage(self) -> None:
        self.range_until_ms = 0
        for nid in self.directory.node_ids():
            self._call(nid, self._usage_request(), self._got_usage)

    def _ask(self, node_id: str) -> None:
        self._call(node_id, KeysRequest("list"), self._got_keys)
        self._call(node_id, self._usage_request(), self._got_usage)

    def range_ms(self) -> tuple[int, int]:
        if not self.range_until_ms:
            now = int(time.time() * 1000)
            self.range_until_ms = now - now % 3_600_000 + 3_600_000   # the end of this hour
        return self.range_until_ms - int(self.range_box.currentData()) * 3_600_000, self.range_until_ms

    def _usage_request(self) -> KeysRequest:
        since, until = self.range_ms()
        return KeysRequest("usage", since_ms=since, until_ms=until)

    def _on_answer(self, op_id: str, answer: KeysAnswer) -> None:
        then = self.ops.pop(op_id, None)
        if then is not None:
            then(answer)

    def _got_keys(self, a: KeysAnswer) -> None:
        if a.error:
            self.errors[a.node_id] = a.error
        else:
            self.errors.pop(a.node_id, None)
            self.keys[a.node_id] = a.keys
        self._show()

    def _got_usage(self, a: KeysAnswer) -> None:
        if a.error:
            self.errors[a.node_id] = a.error
        else:
            self.buckets[a.node_id] = a.buckets
        self._show()

    # -- showing ---------------------------------------------------------------------------------
    def _show(self) -> None:
        scope = self.node_ids()
        errs = [f"{self.directory.label(n)}: {self.errors[n]}" for n in scope if n in self.errors]
        if errs:
            self.banner.show_message(" · ".join(errs[:3]) + (f" (and {len(errs) - 3} more)" if len(errs) > 3 else ""),
                                     "warning")
        elif self.banner.kind == "warning":
            self.banner.clear()
        self._show_keys(scope)
        self._show_usage()

    def visible_keys(self) -> list[KeyEntry]:
        return [k for n in self.node_ids() for k in self.keys.get(n, ())]

    def _show_keys(self, scope: list[str]) -> None:
        selected = self.selected_key()
        t = self.keys_table
        t.setRowCount(0)
        for k in self.visible_keys():
            r = t.rowCount()
            t.insertRow(r)
            values = (self.directory.label(k.node_id), k.name, k.role, k.state, k.limits.describe(),
                      _when(k.created_ms), _when(k.last_used_ms), _when(k.expires_ms))
            for c, v in enumerate(values):
                item = QTableWidgetItem(v)
                item.setToolTip(v)
                if c == 0:
                    item.setData(Qt.ItemDataRole.UserRole, (k.node_id, k.name))
                t.setItem(r, c, item)
            if selected and (selected.node_id, selected.name) == (k.node_id, k.name):
                t.selectRow(r)
        self.keys_fit.fit()
        self._update_buttons()

    def scoped_buckets(self) -> list[UsageBucket]:
        return [b for n in self.node_ids() for b in self.buckets.get(n, ())]

    def _show_usage(self) -> None:
        buckets = self.scoped_buckets()
        since, until = self.range_ms()
        hours, series = hourly(buckets, since, until, self.stack_box.currentData())
        self.chart.set_data(hours, series)
        tops = top_keys(buckets)
        t = self.top_table
        t.setRowCount(len(tops))
        for r, k in enumerate(tops):
            for c, v in enumerate((k.key, k.requests, k.prompt_tokens, k.completion_tokens, k.errors,
                                   k.rate_limited, k.nodes)):
                item = QTableWidgetItem(f"{v:,}" if isinstance(v, int) else v)
                item.setToolTip(item.text())
                if isinstance(v, int):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                t.setItem(r, c, item)
        s = totals(buckets)
        nodes = self.node_ids()
        t.setColumnHidden(len(TOP_COLUMNS) - 1, len(nodes) < 2)   # Nodes: only across several
        self.top_fit.fit()
        who = (f"Fleet ({len(nodes)} node{'s' if len(nodes) != 1 else ''})" if not self.node_box.currentData()
               else self.directory.label(nodes[0]))
        self.totals_label.setText(
            f"{who}: {s['requests']:,} requests · {s['prompt_tokens'] + s['completion_tokens']:,} tokens "
            f"({s['prompt_tokens']:,} prompt, {s['completion_tokens']:,} completion) · {s['errors']:,} errors · "
            f"{s['rate_limited']:,} rate-limited")

    # -- key actions -----------------------------------------------------------------------------
    def selected_key(self) -> KeyEntry | None:
        rows = self.keys_table.selectionModel().selectedRows() if self.keys_table.selectionModel() else []
        if not rows:
            return None
        node_id, name = self.keys_table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)
        return next((k for k in self.keys.get(node_id, ()) if k.name == name), None)

    def select_key(self, node_id: str, name: str) -> None:
        for r in range(self.keys_table.rowCount()):
            if self.keys_table.item(r, 0).data(Qt.ItemDataRole.UserRole) == (node_id, name):
                self.keys_table.selectRow(r)
                return

    def _update_buttons(self) -> None:
        k = self.selected_key()
        active = k is not None and k.state == "active"
        self.edit_button.setEnabled(active)
        self.revoke_button.setEnabled(active)
        self.create_button.setEnabled(bool(self.directory.node_ids()))

    def _confirm(self, title: str, text: str, action: Callable[[], None]) -> None:
        box = QMessageBox(QMessageBox.Icon.Question, title, text,
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.finished.connect(lambda _r: action() if box.clickedButton() is box.button(
            QMessageBox.StandardButton.Yes) else None)
        self.confirm_box = box
        box.open()

    def ask_create(self) -> None:
        nodes = [(n, self.directory.label(n)) for n in self.directory.node_ids()]
        dlg = KeyDialog(self, nodes, node_id=self.node_box.currentData() or "")
        self.key_dialog = dlg

        def accepted() -> None:
            node_id, name, role, lim = dlg.node.currentData(), dlg.name.text().strip(), dlg.role.currentText(), \
                dlg.limits()
            days = dlg.expires.value()
            self._confirm("Create key", f"Create key '{name}' with role {role} on {self.directory.label(node_id)}"
                          f" ({lim.describe()}{f', expires in {days:.0f} days' if days else ''})?",
                          lambda: self._call(node_id, KeysRequest("create", name, role, days, lim), self._created))
        dlg.accepted.connect(accepted)
        dlg.open()

    def _created(self, a: KeysAnswer) -> None:
        if a.error or a.key is None:
            self.banner.show_message(f"Could not create the key: {a.error}", "error")
            return
        self.last_secret = a.secret
        self.secret_dialog = SecretDialog(self, a.key, a.secret, self.directory.label(a.node_id))
        self.secret_dialog.open()
        self.banner.show_message(f"Key '{a.key.name}' created on {self.directory.label(a.node_id)}.", "ok")
        self._call(a.node_id, KeysRequest("list"), self._got_keys)

    def ask_edit(self) -> None:
        key = self.selected_key()
        if key is None:
            return
        nodes = [(n, self.directory.label(n)) for n in self.directory.node_ids()]
        dlg = KeyDialog(self, nodes, key=key, node_id=key.node_id)
        self.key_dialog = dlg

        def accepted() -> None:
            lim = dlg.limits()
            self._confirm("Change limits", f"Set the limits of '{key.name}' on {self.directory.label(key.node_id)} "
                          f"to: {lim.describe()}? They apply within a second, to requests already admitted "
                          f"only as they finish.",
                          lambda: self._call(key.node_id, KeysRequest("limits", key.name, limits=lim), self._changed))
        dlg.accepted.connect(accepted)
        dlg.open()

    def ask_revoke(self) -> None:
        key = self.selected_key()
        if key is None:
            return
        self._confirm("Revoke key", f"Revoke '{key.name}' on {self.directory.label(key.node_id)}? Every client "
                      "using it is refused from now on; this cannot be undone.",
                      lambda: self._call(key.node_id, KeysRequest("revoke", key.name), self._changed))

    def _changed(self, a: KeysAnswer) -> None:
        what = "revoked" if a.request.kind == "revoke" else "limits changed"
        if a.error:
            self.banner.show_message(f"'{a.request.name}' not {what.split()[0]}: {a.error}", "error")
        else:
            self.banner.show_message(f"Key '{a.request.name}' {what} on {self.directory.label(a.node_id)}.", "ok")
        self._call(a.node_id, KeysRequest("list"), self._got_keys)

    # -- export ----------------------------------------------------------------------------------
    def export_csv(self, path: str | None = None) -> str:
        """Writes the usage in scope (node, range) as CSV; returns the path ('' if cancelled)."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export usage", "usage.csv", "CSV (*.csv)")
            if not path:
                return ""
        labels = {n: self.directory.label(n) for n in self.directory.node_ids()}
        try:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(usage_csv(self.scoped_buckets(), labels))
        except OSError as e:
            self.banner.show_message(f"Cannot write {path}: {e.strerror or e}", "error")
            return ""
        self.banner.show_message(f"Usage exported to {path}.", "ok")
        return path
