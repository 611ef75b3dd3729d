"""The Models view: a node's repository, deploying and undeploying models.

Top: the node picker and the actions (Refresh, Deploy…, Undeploy, Add model…, Copy to
nodes…, Delete; they wrap onto a second row in a narrow window). Then an inline banner
for errors, the repository table, and a Deployments panel with one progress row per
running deploy (several rows when one model goes to several nodes at once). Every command
goes to the NodeHub and returns at once; answers arrive as bridge signals.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, QSortFilterProxyModel, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QFrame, QHBoxLayout, QHeaderView, QLabel,
    QMessageBox, QPushButton, QScrollArea, QSizePolicy, QSplitter, QTableView, QVBoxLayout, QWidget,
)

from musaops.app.core import CommandError, DeployEvent, DeploySpec, UndeployResult
from musaops.app.qt.fleet_state import FleetState
from musaops.app.qt.models.models_model import (
    COL_ARCH, COL_DEPLOYMENT, COL_NAME, COL_REASON, COL_STATE, EntryRole, ModelsTableModel, SortRole, human_bytes,
)
from musaops.app.qt.views.banner import Banner, never_widens
from musaops.app.qt.views.column_fit import ColumnFitter
from musaops.app.qt.views.deploy_dialog import DeployDialog, NodeChoice
from musaops.app.qt.views.deploy_progress import DeployProgressRow
from musaops.app.qt.views.failure_dialog import FailureDialog
from musaops.app.qt.views.flow_layout import flow_widget
from musaops.app.qt.views.model_transfers import AddModelDialog, CopyDialog, TransferRow


TRANSITIONAL_STATES = ("pending", "loading", "unloading")
# Columns that elide when the table is narrow, each with its minimum width (px).
ELASTIC_COLUMNS = {COL_NAME: 125, COL_DEPLOYMENT: 147, COL_ARCH: 112, COL_REASON: 120}


class SortMarkHeader(QHeaderView):
    """A header that asks room for the sort arrow only in the sorted column (Qt asks it in
    every column: 30 px a column that a 1024 px window cannot spare). Right-aligned labels
    keep half: the style sheet draws them partly clear of the arrow's place (seen at 1024 px)."""

    def sectionSizeFromContents(self, logical: int) -> QSize:  # noqa: N802
        size = super().sectionSizeFromContents(logical)
        right = int(self.model().headerData(logical, self.orientation(), Qt.ItemDataRole.TextAlignmentRole) or 0) \
            & int(Qt.AlignmentFlag.AlignRight)
        if self.isSortIndicatorShown() and logical != self.sortIndicatorSection():   # Qt adds height + margin
            size.setWidth(max(0, size.width() - (size.height() // 2 if right else size.height())))
        return size


class ModelsView(QWidget):
    """Repository table, deploy dialog, per-node deploy progress, undeploy."""

    def __init__(self, hub: Any, bridge: Any, parent: QWidget | None = None,
                 directory: FleetState | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelsView")
        self.hub = hub
        self.directory = directory or FleetState(bridge, parent=self)
        self.rows: dict[str, DeployProgressRow] = {}   # op_id -> row
        self.deploy_dialog: DeployDialog | None = None
        self.failure_dialog: FailureDialog | None = None
        self.confirm_box: QMessageBox | None = None
        self._pending_node = ""
        self._stopped = False
        self._was_online = False
        self._cancelled: dict[str, tuple[str, str]] = {}  # op_id -> (node_id, model)
        # While a model is pending, loading or unloading, re-read the repository once a second.
        self._poll = QTimer(self)
        self._poll.setSingleShot(True)
        self._poll.setInterval(1000)
        self._poll.timeout.connect(self.refresh)

        title = QLabel("Models")
        title.setObjectName("viewTitle")
        title.setStyleSheet("font-size: 18px; font-weight: 600;")
        self.node_box = QComboBox()
        self.node_box.setMinimumWidth(220)
        self.node_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.node_box.setToolTip("Node whose repository is shown")
        self.refresh_button = QPushButton("Refresh")
        self.deploy_button = QPushButton("Deploy…")
        self.deploy_button.setToolTip("Deploy a model to this node or to several nodes at once")
        self.undeploy_button = QPushButton("Undeploy")
        self.undeploy_button.setEnabled(False)
        self.add_button = QPushButton("Add model…")
        self.add_button.setToolTip("Upload a model folder or a .gguf file from this workstation to nodes")
        self.copy_button = QPushButton("Copy to nodes…")
        self.copy_button.setToolTip("Copy the selected model from a node that has it to other nodes")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the selected model from this node's repository")
        self.transfer_rows: dict[str, TransferRow] = {}   # op_id -> row
        self.add_dialog: AddModelDialog | None = None
        self.copy_dialog: CopyDialog | None = None
        header = QHBoxLayout()
        header.addWidget(title)
        header.addSpacing(16)
        header.addWidget(QLabel("Node"))
        header.addWidget(self.node_box)
        # The actions wrap onto a second row rather than widen the view; Refresh, Deploy and
        # Undeploy come first, so they stay on the first row.
        self.actions = flow_widget(self.refresh_button, self.deploy_button, self.undeploy_button,
                                   self.add_button, self.copy_button, self.delete_button, align_right=True)
        header.addWidget(self.actions, 1)

        self.banner = Banner(self)
        self.repo_label = never_widens(QLabel())
        self.repo_label.setStyleSheet("color: #6b7a90;")

        self.model = ModelsTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SortRole)
        self.table = QTableView()
        self.table.setHorizontalHeader(SortMarkHeader(Qt.Orientation.Horizontal, self.table))
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL_NAME, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(28)
        hh = self.table.horizontalHeader()
        hh.moveSection(hh.visualIndex(COL_DEPLOYMENT), hh.visualIndex(COL_ARCH))   # seen first
        hh.setHighlightSections(False)
        hh.setTextElideMode(Qt.TextElideMode.ElideRight)
        # No sideways scrolling: names, deployment, architecture and reason elide (tooltips
        # hold them whole) before numbers are cut; Deployment takes the room left over.
        self.column_fit = ColumnFitter(self.table, ELASTIC_COLUMNS, stretch=COL_DEPLOYMENT)
        self.model.modelReset.connect(self.column_fit.fit)   # new rows, states, deployments
        hh.sortIndicatorChanged.connect(lambda *_: self.column_fit.fit())   # the arrow moved
        self.model.dataChanged.connect(lambda *_: self.column_fit.fit())
        self.empty_label = QLabel("No node connected. Add a node to see its model repository.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        never_widens(self.empty_label)   # it can hold the node's last error
        self.empty_label.setStyleSheet("color: #6b7a90; padding: 24px;")

        ops_title = QLabel("Deployments")
        ops_title.setStyleSheet("font-weight: 600;")
        self.ops_hint = QLabel("No deploy running.")
        self.ops_hint.setStyleSheet("color: #6b7a90;")
        self._ops_box = QWidget()
        self._ops_layout = QVBoxLayout(self._ops_box)
        self._ops_layout.setContentsMargins(0, 0, 0, 0)
        self._ops_layout.setSpacing(6)
        self._ops_layout.addWidget(self.ops_hint)
        self._ops_layout.addStretch(1)
        ops_scroll = QScrollArea()
        ops_scroll.setWidgetResizable(True)
        ops_scroll.setFrameShape(QFrame.Shape.NoFrame)
        ops_scroll.setWidget(self._ops_box)
        ops_scroll.setMinimumHeight(120)
        ops_scroll.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.ops_scroll = ops_scroll

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.setSpacing(8)
        layout.addLayout(header)
        layout.addWidget(self.banner)
        layout.addWidget(self.repo_label)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.table, 1)
        tl.addWidget(self.empty_label)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 4, 0, 0)
        bl.addWidget(ops_title)
        bl.addWidget(ops_scroll, 1)
        self.splitter = QSplitter(Qt.Orientation.Vertical)  # the operator sizes table vs. deploys
        self.splitter.addWidget(top)
        self.splitter.addWidget(bottom)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setSizes([420, 280])
        layout.addWidget(self.splitter, 1)

        self.node_box.currentIndexChanged.connect(self._on_node_chosen)
        self.refresh_button.clicked.connect(self.refresh)
        self.deploy_button.clicked.connect(self.open_deploy_dialog)
        self.undeploy_button.clicked.connect(self.ask_undeploy)
        self.add_button.clicked.connect(self.open_add_dialog)
        self.copy_button.clicked.connect(self.open_copy_dialog)
        self.delete_button.clicked.connect(self.ask_delete)
        if hasattr(bridge, "transfer"):
            bridge.transfer.connect(self._on_transfer)
        self.table.selectionModel().selectionChanged.connect(self._update_actions)
        self.table.doubleClicked.connect(self._on_double_click)
        self.directory.node_added.connect(self._node_added)
        self.directory.node_updated.connect(self._node_updated)
        self.directory.node_removed.connect(self._node_gone)
        self.directory.models_changed.connect(self._on_models)
        bridge.deploy_event.connect(self._on_deploy_event)
        bridge.undeploy_done.connect(self._on_undeploy_done)
        if hasattr(bridge, "command_error"):
            bridge.command_error.connect(self._on_command_error)
        self._fill_nodes()

    # -- node picker -------------------------------------------------------------------------
    def current_node(self) -> str:
        return self.node_box.currentData() or ""

    def select_node(self, node_id: str) -> None:
        i = self.node_box.findData(node_id)
        if i >= 0:
            self.node_box.setCurrentIndex(i)

    def _node_text(self, node_id: str) -> str:
        status = self.directory.status(node_id)
        return f"{self.directory.label(node_id)}  ·  {status.state.value if status else 'gone'}"

    def _fill_nodes(self) -> None:
        current = self.current_node()
        ids = self.directory.node_ids()
        self.node_box.blockSignals(True)
        self.node_box.clear()
        for nid in ids:
            self.node_box.addItem(self._node_text(nid), nid)
        self.node_box.blockSignals(False)
        if current in ids:
            self.node_box.setCurrentIndex(ids.index(current))
        elif ids:
            self.node_box.setCurrentIndex(0)
        self._settle_node(current)

    # The picker follows the directory one node at a time (a rebuild of every entry per
    # change is O(n^2) while a large fleet connects); each ends like a full refill would.
    def _node_added(self, node_id: str) -> None:
        current = self.current_node()
        if self.node_box.findData(node_id) < 0:
            self.node_box.blockSignals(True)
            self.node_box.addItem(self._node_text(node_id), node_id)
            if self.node_box.currentIndex() < 0:
                self.node_box.setCurrentIndex(0)
            self.node_box.blockSignals(False)
        self._settle_node(current)

    def _node_updated(self, node_id: str) -> None:
        i = self.node_box.findData(node_id)
        if i >= 0:
            text = self._node_text(node_id)
            if self.node_box.itemText(i) != text:
                self.node_box.setItemText(i, text)
        self._settle_node(self.current_node())
        if node_id == self.current_node():
            self._show_stale()

    def _show_stale(self) -> None:
        """An offline or unauthorized node's repository stays in the table, marked as its
        last answer (with the time), never as a live "Ready"."""
        nid = self.current_node()
        note = self.directory.stale_note(nid) if nid else ""
        self.model.set_stale(note)
        if note and self.model.rowCount():
            self.repo_label.setText(f"Stale: {self.directory.label(nid)} is {note}; "
                                    "the table shows its last answer.")

    def _node_gone(self, node_id: str) -> None:
        current = self.current_node()
        i = self.node_box.findData(node_id)
        if i >= 0:
            self.node_box.blockSignals(True)
            self.node_box.removeItem(i)
            if node_id == current:
                self.node_box.setCurrentIndex(0 if self.node_box.count() else -1)
            self.node_box.blockSignals(False)
        self._settle_node(current)

    def _settle_node(self, previous: str) -> None:
        """After the picker changed: read the repository of a newly chosen node, or of the
        chosen one when it came (back) online."""
        nid = self.current_node()
        came_online = bool(nid) and self.directory.online(nid) and not self._was_online
        self._was_online = bool(nid) and self.directory.online(nid)
        if nid != previous or came_online or (nid and not self.model.rowCount()):
            self._on_node_chosen()  # a new node, or one back online: read its repository
        self._update_actions()

    def _on_node_chosen(self, *_: object) -> None:
        nid = self.current_node()
        self.model.set_entries(self.directory.models(nid))
        self._show_stale()
        self._update_empty()
        if nid and self.directory.online(nid) and nid != self._pending_node:
            self.refresh()

    def stop(self) -> None:
        """Stops the view's timer (the main window calls this on close)."""
        self._stopped = True
        self._poll.stop()

    def hideEvent(self, event) -> None:  # noqa: N802 (Qt name)
        self._poll.stop()
        super().hideEvent(event)

    def refresh(self) -> None:
        nid = self.current_node()
        if not nid or self._stopped:
            return
        self._pending_node = nid
        self.repo_label.setText(f"Loading the repository of {self.directory.label(nid)}…")
        self.hub.refresh_models(nid)

    def _on_models(self, node_id: str) -> None:
        if node_id == self._pending_node:
            self._pending_node = ""
        if node_id != self.current_node():
            return
        entries = self.directory.models(node_id)
        self.model.set_entries(entries)
        self.table.setColumnHidden(COL_REASON, not any(e.reason for e in entries))
        self.column_fit.fit()
        self._settle_cancelled(node_id, entries)
        ready = sum(1 for e in entries if e.state == "ready")
        self.repo_label.setText(f"{len(entries)} model{'s' if len(entries) != 1 else ''} in the repository"
                                f" of {self.directory.label(node_id)} · {ready} deployed")
        self._show_stale()
        if self.banner.kind == "error" and "repository" in self.banner.text():
            self.banner.clear()
        if any(e.state in TRANSITIONAL_STATES for e in entries) and self.isVisible():
            self._poll.start()
        self._update_empty()
        self._update_actions()

    def _update_empty(self) -> None:
        nid = self.current_node()
        if not nid:
            text = "No node connected. Add a node to see its model repository."
        elif not self.directory.online(nid):
            status = self.directory.status(nid)
            why = f": {status.last_error}" if status and status.last_error else "."
            text = f"{self.directory.label(nid)} is {status.state.value if status else 'offline'}{why}"
        elif self.model.rowCount() == 0:
            text = "The repository is empty. Put an HF-format model folder in the node's models directory."
        else:
            text = ""
        self.empty_label.setText(text)
        self.empty_label.setVisible(bool(text) and self.model.rowCount() == 0)

    def selected_entry(self):  # -> ModelEntry | None
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.proxy.data(rows[0], EntryRole)

    def select_model(self, name: str) -> None:
        row = self.model.row_of(name)
        if row >= 0:
            self.table.selectRow(self.proxy.mapFromSource(self.model.index(row, 0)).row())

    def _update_actions(self, *_: object) -> None:
        nid = self.current_node()
        online = bool(nid) and self.directory.online(nid)
        entry = self.selected_entry()
        self.refresh_button.setEnabled(online)
        self.deploy_button.setEnabled(any(self.directory.online(n) for n in self.directory.node_ids()))
        self.undeploy_button.setEnabled(online and entry is not None and entry.state in ("ready", "loading", "pending"))
        self.add_button.setEnabled(any(self.directory.online(n) for n in self.directory.node_ids()))
        self.copy_button.setEnabled(online and entry is not None and len(self.directory.node_ids()) > 1)
        self.delete_button.setEnabled(online and entry is not None and entry.state not in ("ready", "loading", "pending"))

    # -- deploy --------------------------------------------------------------------------------
    def node_choices(self) -> list[NodeChoice]:
        out = []
        for nid in self.directory.node_ids():
            status = self.directory.status(nid)
            out.append(NodeChoice(nid, self.directory.label(nid), self.directory.online(nid),
                                  status.info if status else None, self.directory.latest.get(nid),
                                  self.directory.models(nid)))
        return out

    def _on_double_click(self, index: Any) -> None:
        """A failed model's State or Reason: why it failed, in full (a vLLM child's log tail);
        anywhere else: the deploy dialog."""
        entry = self.proxy.data(index, EntryRole)
        if entry is not None and entry.reason and index.column() in (COL_STATE, COL_REASON):
            self.open_failure_dialog(entry)
        else:
            self.open_deploy_dialog()

    def open_failure_dialog(self, entry: Any) -> FailureDialog:
        dialog = FailureDialog(entry, self.directory.label(self.current_node()), parent=self)
        dialog.finished.connect(dialog.deleteLater)
        self.failure_dialog = dialog
        dialog.open()
        return dialog

    def open_deploy_dialog(self) -> DeployDialog | None:
        nodes = [n for n in self.node_choices() if n.online]
        if not nodes:
            self.banner.show_message("No node is online to deploy to.", "warning")
            return None
        entry = self.selected_entry()
        dialog = DeployDialog(nodes, node_id=self.current_node(), model=entry.name if entry else "", parent=self)
        dialog.accepted.connect(lambda: self.submit_deploy(dialog.specs()))
        dialog.finished.connect(dialog.deleteLater)
        self.deploy_dialog = dialog
        dialog.open()
        return dialog

    def submit_deploy(self, specs: list[tuple[str, DeploySpec]]) -> list[str]:
        """Sends one Deploy per node; returns the op ids (one progress row each)."""
        ops = []
        for node_id, spec in specs:
            op_id = self.hub.deploy(node_id, spec)
            self._add_row(op_id, self.directory.label(node_id), spec.model)
            ops.append(op_id)
        self.banner.clear()
        return ops

    def _add_row(self, op_id: str, node_label: str, model: str) -> DeployProgressRow:
        return self._show_op(self.rows, op_id, DeployProgressRow(op_id, node_label, model))

    def _show_op(self, rows: dict, op_id: str, row):  # noqa: ANN001, ANN201 (a progress row)
        """Adds a deploy or transfer progress row to the operations panel; its Cancel goes to
        the hub and its dismissal removes it from `rows` (self.rows or self.transfer_rows)."""
        row.cancel_requested.connect(self.hub.cancel)
        row.dismissed.connect(lambda op: self._dismiss_op(rows, op))
        rows[op_id] = row
        self._ops_layout.insertWidget(self._ops_layout.count() - 1, row)
        self.ops_hint.hide()
        return row

    def _dismiss_op(self, rows: dict, op_id: str) -> None:
        row = rows.pop(op_id, None)
        if row is not None:
            row.setParent(None)
            row.deleteLater()
        self.ops_hint.setVisible(not self.rows and not self.transfer_rows)

    def _on_deploy_event(self, event: DeployEvent) -> None:
        row = self.rows.get(event.op_id)
        if row is None:  # a deploy started elsewhere (another view, a test): show it too
            row = self._add_row(event.op_id, self.directory.label(event.node_id), event.model)
        row.apply(event)
        if event.done and event.stage == "cancelled":
            self._cancelled[event.op_id] = (event.node_id, event.model)
        if event.done:
            if event.node_id == self.current_node():
                self.refresh()
            if not event.ok and event.stage != "cancelled":
                self.banner.show_message(
                    f"Deploy of {event.model} on {self.directory.label(event.node_id)} failed: {event.message}")

    def _settle_cancelled(self, node_id: str, entries) -> None:
        """A cancel can lose the race with the last loading step: say what the node ended with."""
        states = {e.name: e.state for e in entries}
        for op_id, (nid, model) in list(self._cancelled.items()):
            state = states.get(model)
            if nid != node_id or state in TRANSITIONAL_STATES:
                continue
            row = self.rows.get(op_id)
            if row is not None and state == "ready":
                row.detail.setText(f"Cancel arrived after loading finished: {model} is deployed.")
            elif row is not None:
                row.detail.setText(f"Cancelled: the node freed what it had loaded ({model} is {state}).")
            self._cancelled.pop(op_id)

    # -- repository: add, copy, delete (hub Models commands; answers as TransferEvents) -----
    def _online_nodes(self) -> list[tuple[str, str]]:
        return [(n, self.directory.label(n)) for n in self.directory.node_ids() if self.directory.online(n)]

    def open_add_dialog(self) -> AddModelDialog | None:
        nodes = self._online_nodes()
        if not nodes:
            self.banner.show_message("No node is online to upload to.", "warning")
            return None
        dialog = AddModelDialog(nodes, self.current_node(), parent=self)
        self._open_dialog("add_dialog", dialog, lambda: self.submit_import(*dialog.choice()))
        for nid, _label in nodes:   # each node's free space, shown beside it when it answers
            self.hub.repository_space(nid)
        return dialog

    def submit_import(self, path: str, name: str, node_ids: list[str]) -> list[str]:
        return self._start_transfers("import", name, node_ids, lambda nid: self.hub.import_model(nid, path, name))

    def open_copy_dialog(self) -> CopyDialog | None:
        entry = self.selected_entry()
        if entry is None:
            return None
        online = self._online_nodes()
        sources = [(n, lbl) for n, lbl in online if any(m.name == entry.name for m in self.directory.models(n))]
        dialog = CopyDialog(entry.name, sources, online, self.current_node(), parent=self)
        model = entry.name
        self._open_dialog("copy_dialog", dialog, lambda: self.submit_copy(model, *dialog.choice()))
        return dialog

    def submit_copy(self, model: str, source: str, targets: list[str]) -> list[str]:
        return self._start_transfers("pull", model, targets, lambda nid: self.hub.pull_model(nid, source, model))

    def _open_dialog(self, attr: str, dialog: Any, on_accept: Any) -> None:
        """Opens a repository dialog, held in self.<attr> until it closes; OK runs on_accept."""
        dialog.accepted.connect(on_accept)
        dialog.finished.connect(dialog.deleteLater)
        dialog.finished.connect(lambda _r: setattr(self, attr, None))
        setattr(self, attr, dialog)
        dialog.open()

    def _start_transfers(self, kind: str, model: str, node_ids: list[str], start: Any) -> list[str]:
        """Starts one transfer per node (start(node_id) -> op id), each with its progress row."""
        ops = []
        for nid in node_ids:
            op_id = start(nid)
            self._show_op(self.transfer_rows, op_id, TransferRow(op_id, kind, model, self.directory.label(nid)))
            ops.append(op_id)
        return ops

    def ask_delete(self) -> QMessageBox | None:
        entry, nid = self.selected_entry(), self.current_node()
        if entry is None or not nid:
            return None
        box = QMessageBox(QMessageBox.Icon.Warning, "Delete model",
                          f"Delete {entry.name} from the repository of {self.directory.label(nid)}?", parent=self)
        box.setInformativeText(f"Its files ({human_bytes(entry.size_bytes)}) are removed from the node's disk. "
                               "This cannot be undone.")
        model_name = entry.name
        return self._confirm(box, "Delete", lambda: self._start_transfers(
            "delete", model_name, [nid], lambda n: self.hub.delete_model(n, model_name)))

    def _confirm(self, box: QMessageBox, action: str, on_yes: Any) -> QMessageBox:
        """Opens `box` with `action` and Cancel (the default), held in self.confirm_box until it
        closes; on_yes runs when the operator picks `action`."""
        yes = box.addButton(action, QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)

        def done(_result: int) -> None:
            if box.clickedButton() is yes:
                on_yes()
            self.confirm_box = None
            box.deleteLater()

        box.finished.connect(done)
        self.confirm_box = box
        box.open()
        return box

    def _on_transfer(self, event) -> None:  # core.transfers.TransferEvent
        if event.kind == "space":
            if self.add_dialog is not None and event.ok:
                self.add_dialog.set_space(event.node_id, event.free_bytes)
            return
        row = self.transfer_rows.get(event.op_id)
        if row is not None:
            row.update(event)

    # -- undeploy ------------------------------------------------------------------------------
    def ask_undeploy(self) -> QMessageBox | None:
        entry, nid = self.selected_entry(), self.current_node()
        if entry is None or not nid:
            return None
        box = QMessageBox(QMessageBox.Icon.Question, "Undeploy model",
                          f"Undeploy {entry.name} from {self.directory.label(nid)}?", parent=self)
        box.setInformativeText("Its device memory is freed. New requests are refused; requests in "
                               "flight finish first unless you cancel them.")
        cancel_box = QCheckBox("Cancel requests in flight")
        box.setCheckBox(cancel_box)
        model_name = entry.name
        return self._confirm(box, "Undeploy", lambda: self.undeploy(nid, model_name, cancel_box.isChecked()))

    def undeploy(self, node_id: str, model: str, cancel_inflight: bool = False) -> None:
        self.hub.undeploy(node_id, model, cancel_inflight)
        self.banner.show_message(f"Undeploying {model} from {self.directory.label(node_id)}…", "info")
        self.undeploy_button.setEnabled(False)

    def _on_undeploy_done(self, result: UndeployResult) -> None:
        label = self.directory.label(result.node_id)
        if result.ok:
            extra = f" Freed {human_bytes(result.freed_bytes)}." if result.freed_bytes else ""
            if result.cancelled_requests:
                extra += f" {result.cancelled_requests} request(s) cancelled."
            self.banner.show_message(f"{result.model} undeployed from {label}.{extra}", "ok")
        else:
            self.banner.show_message(f"Undeploy of {result.model} on {label} failed: {result.message}")
        if result.node_id == self.current_node():
            self.refresh()

    def _on_command_error(self, error: CommandError) -> None:
        if error.command == "list_models":
            if error.node_id == self._pending_node:
                self._pending_node = ""
            if error.node_id == self.current_node():
                self.repo_label.setText("")
                self.banner.show_message(f"Could not read the repository: {error.message}")
