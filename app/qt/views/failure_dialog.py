"""Why a deployment failed, in full: the node's FAILED reason, which for a supervised engine
(vLLM) ends with the last lines of the child's log. The Models table shows the first line;
double-clicking a failed model's State or Reason opens this."""

from __future__ import annotations

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from musaops.app.core import ModelEntry


class FailureDialog(QDialog):
    def __init__(self, entry: ModelEntry, node_label: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("failureDialog")
        self.setWindowTitle(f"{entry.name} failed")
        dep = entry.deployment
        engine = f" on engine {dep.engine}" if dep is not None and dep.engine else ""
        title = QLabel(f"{entry.name} is {entry.state} on {node_label}{engine}. The node's reason:")
        title.setWordWrap(True)
        self.text = QPlainTextEdit(entry.reason or "The node gave no reason.")
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setMinimumSize(560, 220)
        self.text.moveCursor(self.text.textCursor().MoveOperation.End)   # the last log lines first
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.text, 1)
        layout.addWidget(buttons)
        self.resize(760, 420)
