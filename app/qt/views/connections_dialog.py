"""Connections: add, edit and remove saved nodes (host:port, TLS files, token).

The dialogs only edit values; the main window saves them through the store worker and
tells the hub, so nothing here touches the network or the database.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QDialog, QDialogButtonBox,
                               QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget)

from ...core.nodes import NodeAddress, NodeProfile, TlsFiles, parse_address


class _FileField(QWidget):
    def __init__(self, caption: str, parent=None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("PEM file")
        browse = QPushButton("Browse…")
        browse.clicked.connect(lambda: self._browse(caption))
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(browse)

    def _browse(self, caption: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, caption, "", "PEM files (*.pem *.crt *.key);;All files (*)")
        if path:
            self.edit.setText(path)


class ConnectionEditor(QDialog):
    """Edits one connection; `profile()` returns it once accepted."""

    def __init__(self, profile: NodeProfile | None = None, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Edit connection" if profile else "Add connection")
        self.setMinimumWidth(460)
        self._id = profile.id if profile else 0
        a = profile.address if profile else None
        self.name = QLineEdit(a.name if a else "")
        self.name.setPlaceholderText("optional, e.g. rack-3 / gpu-07")
        self.address = QLineEdit(a.target if a else "")
        self.address.setPlaceholderText("host:port, e.g. 10.0.0.7:50051")
        self.token = QLineEdit(a.token or "" if a else "")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("bearer token, if the node requires one")
        self.use_tls = QCheckBox("Use TLS")
        self.ca = _FileField("CA certificate")
        self.cert = _FileField("Client certificate")
        self.key = _FileField("Client key")
        tls = a.tls if a else None
        self.use_tls.setChecked(tls is not None)
        if tls:
            self.ca.edit.setText(tls.ca)
            self.cert.edit.setText(tls.cert)
            self.key.edit.setText(tls.key)
        self.use_tls.toggled.connect(self._tls_toggled)
        self._tls_toggled(self.use_tls.isChecked())
        self.error = QLabel()
        self.error.setObjectName("formError")
        self.error.setStyleSheet("color: #c0392b;")
        self.error.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Address", self.address)
        form.addRow("Token", self.token)
        form.addRow("", self.use_tls)
        form.addRow("CA file", self.ca)
        form.addRow("Client cert (mTLS)", self.cert)
        form.addRow("Client key (mTLS)", self.key)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(buttons)

    def _tls_toggled(self, on: bool) -> None:
        for w in (self.ca, self.cert, self.key):
            w.setEnabled(on)

    def build(self) -> NodeProfile:
        """The edited profile; raises ValueError with a sentence when invalid."""
        tls = None
        if self.use_tls.isChecked():
            tls = TlsFiles(self.ca.edit.text().strip(), self.cert.edit.text().strip(),
                           self.key.edit.text().strip())
        addr = parse_address(self.address.text(), name=self.name.text().strip(),
                             token=self.token.text().strip() or None, tls=tls)
        return NodeProfile(self._id, addr)

    def accept(self) -> None:
        try:
            self.build()
        except ValueError as e:
            self.error.setText(str(e))
            return
        super().accept()


class ConnectionsDialog(QDialog):
    """The list of saved connections with Add / Edit / Remove."""

    save_requested = Signal(object)     # NodeProfile (id 0 = new)
    remove_requested = Signal(object)   # NodeProfile

    def __init__(self, profiles: list[NodeProfile], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Connections")
        self.setMinimumSize(520, 360)
        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.itemDoubleClicked.connect(lambda _i: self._edit())
        add = QPushButton("Add…")
        self.edit_button = QPushButton("Edit…")
        self.remove_button = QPushButton("Remove")
        add.clicked.connect(self._add)
        self.edit_button.clicked.connect(self._edit)
        self.remove_button.clicked.connect(self._remove)
        side = QVBoxLayout()
        for b in (add, self.edit_button, self.remove_button):
            side.addWidget(b)
        side.addStretch(1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.list, 1)
        row.addLayout(side)
        hint = QLabel("Saved connections reconnect on start. Changes apply at once.")
        hint.setObjectName("summaryCaption")
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(hint)
        lay.addWidget(close)
        self.editor: ConnectionEditor | None = None
        self.set_profiles(profiles)

    def set_profiles(self, profiles: list[NodeProfile]) -> None:
        self.list.clear()
        for p in profiles:
            a = p.address
            flags = [x for x in ("TLS" if a.tls else "", "token" if a.token else "") if x]
            text = f"{a.label}   ({a.target}{', ' + ', '.join(flags) if flags else ''})"
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, p)
            self.list.addItem(item)
        has = self.list.count() > 0
        self.edit_button.setEnabled(has)
        self.remove_button.setEnabled(has)
        if has:
            self.list.setCurrentRow(0)

    def _current(self) -> NodeProfile | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def _add(self) -> None:
        self._open_editor(None)

    def _edit(self) -> None:
        p = self._current()
        if p is not None:
            self._open_editor(p)

    def _open_editor(self, profile: NodeProfile | None) -> None:
        self.editor = ConnectionEditor(profile, self)
        self.editor.accepted.connect(lambda: self.save_requested.emit(self.editor.build()))
        self.editor.open()

    def _remove(self) -> None:
        p = self._current()
        if p is not None:
            self.remove_requested.emit(p)
