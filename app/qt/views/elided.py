"""A label and a check box that elide their text to the width they are given instead of
widening their panel. `text()` stays the full text, and so does the tooltip (set with the
text; a caller may set a longer one after)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter, QPalette
from PySide6.QtWidgets import (QCheckBox, QLabel, QSizePolicy, QStyle, QStyleOptionButton, QStylePainter,
                               QWidget)

MIN_CHARS = "Mmmm…"   # the narrowest an elided text gets: a few characters and the ellipsis


class ElidedLabel(QLabel):
    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt name)
        super().setText(text)
        self.setToolTip(text)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        hint = super().minimumSizeHint()
        return QSize(min(hint.width(), self.fontMetrics().horizontalAdvance(MIN_CHARS)), hint.height())

    def paintEvent(self, event: Any) -> None:  # noqa: N802
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, rect.width())
        painter = QPainter(self)
        self.style().drawItemText(painter, rect, int(self.alignment()), self.palette(), self.isEnabled(),
                                  text, QPalette.ColorRole.WindowText)


class ElidedCheckBox(QCheckBox):
    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setText(text)
        policy = self.sizePolicy()   # QCheckBox's own (Minimum) would never let it shrink
        policy.setHorizontalPolicy(QSizePolicy.Policy.Preferred)
        self.setSizePolicy(policy)

    def setText(self, text: str) -> None:  # noqa: N802
        super().setText(text)
        self.setToolTip(text)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        full = super().sizeHint()
        text_w = self.fontMetrics().horizontalAdvance(self.text())
        return QSize(full.width() - text_w + min(text_w, self.fontMetrics().horizontalAdvance(MIN_CHARS)),
                     full.height())

    def paintEvent(self, event: Any) -> None:  # noqa: N802
        opt = QStyleOptionButton()
        self.initStyleOption(opt)
        room = self.style().subElementRect(QStyle.SubElement.SE_CheckBoxContents, opt, self).width()
        opt.text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, room)
        QStylePainter(self).drawControl(QStyle.ControlElement.CE_CheckBox, opt)
