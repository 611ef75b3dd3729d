"""An inline message strip at the top of a view: where an operator looks, not a dialog.

Errors from the hub (unreachable node, wrong token, RESOURCE_EXHAUSTED, ...) are shown here
as one sentence with a close button; info and success messages use the same strip in a
calmer colour. Never a traceback.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QToolButton, QWidget

# (background, text, border) per kind, for light and for dark palettes.
_STYLES = {
    "error": ("#fdecec", "#8f1d1d", "#e8a6a6"),
    "warning": ("#fff5e0", "#7a4b00", "#f0cf8a"),
    "info": ("#e9f2fd", "#1d4a8f", "#a9c6ee"),
    "ok": ("#e8f6ee", "#1d6b3c", "#a5d9b9"),
}
_DARK_STYLES = {
    "error": ("#3a1d1f", "#f3b4b4", "#7a3236"),
    "warning": ("#3a2f17", "#f2d08a", "#7a6124"),
    "info": ("#1b2a40", "#a9c6ee", "#2f4e7a"),
    "ok": ("#17301f", "#a5d9b9", "#2d6040"),
}


def never_widens(label: QLabel) -> QLabel:
    """Lets `label` hold text of any length (an error with a long path, a URL) without
    widening its view: it wraps at words, and its width is what the layout gives it, never
    the width of its longest word (which is then cut; the full text is in the tooltip)."""
    label.setWordWrap(True)
    policy = label.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
    label.setSizePolicy(policy)
    label.setMinimumWidth(0)
    return label


class Banner(QFrame):
    """A dismissable one-line message; hidden until `show_message`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self._label = never_widens(QLabel(self))
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
        dark = self.palette().window().color().lightness() < 128
        styles = _DARK_STYLES if dark else _STYLES
        bg, fg, border = styles.get(kind, styles["info"])
        self.kind = kind
        self.setStyleSheet(
            f"QFrame#banner {{ background: {bg}; border: 1px solid {border}; border-radius: 6px; }}"
            f"QFrame#banner QLabel {{ color: {fg}; background: transparent; }}"
            f"QFrame#banner QToolButton {{ color: {fg}; border: none; }}"
        )
        self._label.setText(text)
        self._label.setToolTip(text)
        self.show()

    def clear(self) -> None:
        self.kind = ""
        self._label.clear()
        self._label.setToolTip("")
        self.hide()
