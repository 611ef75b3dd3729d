"""The Models view's repository actions: "Add model…" (upload from this workstation),
"Copy to nodes…" (node-to-node pull) and their progress rows.

Widgets only: the view sends hub commands (`import_model`, `pull_model`, `delete_model`,
`repository_space`) and feeds the bridge's TransferEvents to `TransferRow.update` and
`AddModelDialog.set_space`.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QFrame, QHBoxLayout, QLabel, QLineEdit,
    QListWidget, QListWidgetItem, QProgressBar, QPushButton, QVBoxLayout, QWidget,
)

from musaops.app.core.transfers import TransferEvent
from musaops.app.qt.models.models_model import human_bytes
from musaops.v1.model_upload import SUFFIX, UploadError, local_files

TITLES = {"import": "Upload", "pull": "Copy", "delete": "Delete"}


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds + 0.5)
    return f", {s // 60} min {s % 60:02d} s left" if s >= 60 else f", {s} s left"


class TransferRow(QFrame):
    """One transfer to one node: title, bar, bytes with rate and ETA, Cancel then Dismiss."""

    cancel_requested = Signal(str)
    dismissed = Signal(str)

    def __init__(self, op_id: str, kind: str, model: str, node_label: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.op_id, self.finished = op_id, False
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel(f"{TITLES.get(kind, kind)} {model} → {node_label}")
        self.title.setStyleSheet("font-weight: 600;")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.detail = QLabel("starting")
        self.detail.setWordWrap(True)
        self.button = QPushButton("Cancel")
        self.button.clicked.connect(self._clicked)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.addLayout(top)
        lay.addWidget(self.bar)
        lay.addWidget(self.detail)

    def _clicked(self) -> None:
        (self.dismissed if self.finished else self.cancel_requested).emit(self.op_id)

    def update(self, ev: TransferEvent) -> None:  # noqa: D102 - QWidget.update is not used on rows
        self.bar.setValue(int(1000 * ev.fraction))
        if ev.done:
            self.finished = True
            self.button.setText("Dismiss")
            colour = "#2f9e44" if ev.ok else "#d64545"
            self.bar.setStyleSheet(f"QProgressBar::chunk {{ background: {colour}; }}")
            if ev.ok:
                self.bar.setValue(1000)
            self.detail.setText(ev.message or ev.stage)
            return
        rate = f", {human_bytes(int(ev.rate_bytes_per_s))}/s" if ev.rate_bytes_per_s else ""
        what = "hashing on this workstation" if ev.stage == "hashing" else ev.stage
        self.detail.setText(f"{what}: {human_bytes(ev.bytes_done)} of {human_bytes(ev.bytes_total)}"
                            f"{rate}{_eta(ev.eta_s)}")


def _node_list(nodes: list[tuple[str, str]], checked: set[str]) -> QListWidget:
    box = QListWidget()
    for nid, label in nodes:
        item = QListWidgetItem(label)
        item.setData(Qt.ItemDataRole.UserRole, nid)
        item.setData(Qt.ItemDataRole.UserRole + 1, label)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if nid in checked else Qt.CheckState.Unchecked)
        box.addItem(item)
    return box


def _checked(box: QListWidget) -> list[str]:
    return [box.item(i).data(Qt.ItemDataRole.UserRole) for i in range(box.count())
            if box.item(i).checkState() == Qt.CheckState.Checked]


def _ok_cancel(dialog: QDialog, ok_text: str) -> tuple[QDialogButtonBox, QLabel]:
    """The dialog's OK (named ok_text) and Cancel buttons, and the red line that says why OK is refused."""
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    buttons.button(QDialogButtonBox.StandardButton.Ok).setText(ok_text)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    error = QLabel("")
    error.setStyleSheet("color: #d64545;")
    return buttons, error


class AddModelDialog(QDialog):
    """A folder or .gguf on this workstation, its name in the repository, the target nodes
    (each with its repository's free space once the node has answered)."""

    def __init__(self, nodes: list[tuple[str, str]], current: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Add model")
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("a model folder or a .gguf file on this workstation")
        self.name_edit = QLineEdit()
        folder, gguf = QPushButton("Folder…"), QPushButton(".gguf…")
        folder.clicked.connect(self._pick_folder)
        gguf.clicked.connect(self._pick_gguf)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(folder)
        row.addWidget(gguf)
        self.nodes = _node_list(nodes, {current})
        self.size_label = QLabel("")
        self.size_label.setStyleSheet("color: #6b7a90;")
        self.buttons, self.error = _ok_cancel(self, "Upload")
        form = QFormLayout()
        form.addRow("Model", row)
        form.addRow("Name", self.name_edit)
        form.addRow("", self.size_label)
        form.addRow("To nodes", self.nodes)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(self.buttons)
        self.path_edit.textChanged.connect(self._path_changed)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder")
        if path:
            self.path_edit.setText(path)

    def _pick_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "GGUF file", "", "GGUF models (*.gguf)")
        if path:
            self.path_edit.setText(path)

    def _path_changed(self, text: str) -> None:
        p = Path(text).expanduser()
        self.name_edit.setText(p.name)
        if p.is_dir() and not _looks_like_model(p):   # typing "/" on the way must not walk the disk
            self.size_label.setText("")
            return
        try:   # the files the upload sends (hidden ones skipped), as the upload lists them
            size = sum(f.stat().st_size for _name, f in local_files(p, p.name))
            self.size_label.setText(f"{human_bytes(size)} to upload")
        except (UploadError, OSError):
            self.size_label.setText("")

    def set_space(self, node_id: str, free_bytes: int) -> None:
        for i in range(self.nodes.count()):
            item = self.nodes.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == node_id:
                item.setText(f"{item.data(Qt.ItemDataRole.UserRole + 1)}  ·  {human_bytes(free_bytes)} free")

    def choice(self) -> tuple[str, str, list[str]]:
        return self.path_edit.text().strip(), self.name_edit.text().strip(), _checked(self.nodes)

    def accept(self) -> None:
        path, name, nodes = self.choice()
        problem = ("Pick a model folder or a .gguf file." if not path or not Path(path).expanduser().exists() else
                   "Give the model a name." if not name else "Choose at least one node." if not nodes else "")
        if problem:
            self.error.setText(problem)
            return
        super().accept()


class CopyDialog(QDialog):
    """Copy one model node to node: the source (a node that has it) and the targets."""

    def __init__(self, model: str, sources: list[tuple[str, str]], targets: list[tuple[str, str]],
                 current: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Copy {model} to nodes")
        self.source_box = QComboBox()
        for nid, label in sources:
            self.source_box.addItem(label, nid)
        i = self.source_box.findData(current)
        if i >= 0:
            self.source_box.setCurrentIndex(i)
        self.targets = _node_list(targets, set())
        hint = QLabel("The nodes copy from the source directly; the weights do not pass through this "
                      "workstation. The console gives each node its credential for the source.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #6b7a90;")
        self.buttons, self.error = _ok_cancel(self, "Copy")
        form = QFormLayout()
        form.addRow("From", self.source_box)
        form.addRow("To nodes", self.targets)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(hint)
        lay.addWidget(self.error)
        lay.addWidget(self.buttons)

    def choice(self) -> tuple[str, list[str]]:
        source = self.source_box.currentData() or ""
        return source, [t for t in _checked(self.targets) if t != source]

    def accept(self) -> None:
        source, targets = self.choice()
        if not source or not targets:
            self.error.setText("Choose a source and at least one other node.")
            return
        super().accept()


def _looks_like_model(folder: Path) -> bool:
    """A folder the repository would list as a model (config.json, or a .gguf in it); only
    those are measured while the path is typed, on the GUI thread."""
    try:
        return (folder / "config.json").is_file() or any(folder.glob("*" + SUFFIX))
    except OSError:
        return False
