"""An inline message strip at the top of a view: where an operator looks, not a dialog.

Errors from the hub (unreachable node, wrong token, RESOURCE_EXHAUSTED, ...) are shown here
as one sentence with a close button; info and success messages use the same strip in a
calmer colour. Never a traceback.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget

_STYLES = {
    "error": ("#fdecec", "#8f1d1d", "#e8a6a6"),
    "warning": ("#fff5e0", "#7a4b00", "#f0cf8a"),
    "info": ("#e9f2fd", "#1d4a8f", "#a9c6ee"),
    "ok": ("#e8f6ee", "#1d6b3c", "#a5d9b9"),
}


class Banner(QFrame):
    """A dismissable one-line message; hidden until `show_message`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self._label = QLabel(self)
        self._label.setWordWrap(True)
        self._label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton(self)
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.clear)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 6, 6)
        layout.addWidget(self._label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.kind = ""
        self.hide()

    def text(self) -> str:
        return self._label.text()

    def show_message(self, text: str, kind: str = "error") -> None:
        bg, fg, border = _STYLES.get(kind, _STYLES["info"])
        self.kind = kind
        self.setStyleSheet(
            f"QFrame#banner {{ background: {bg}; border: 1px solid {border}; border-radius: 6px; }}"
            f"QFrame#banner QLabel {{ color: {fg}; background: transparent; }}"
            f"QFrame#banner QToolButton {{ color: {fg}; border: none; }}"
        )
        self._label.setText(text)
        self.show()

    def clear(self) -> None:
        self.kind = ""
        self._label.clear()
        self.hide()
