"""A layout that places its widgets in a row and wraps onto the next row when the width
runs out (Qt's flow layout example), so a toolbar of buttons never widens its view.
Rows are right-aligned when `align_right` (buttons after a stretch), in insertion order:
the first items stay on the first row."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QLayout, QLayoutItem, QSizePolicy, QWidget


class FlowLayout(QLayout):
    def __init__(self, parent: QWidget | None = None, spacing: int = 6, align_right: bool = False) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self.align_right = align_right
        self.setContentsMargins(0, 0, 0, 0)

    # -- QLayout ---------------------------------------------------------------------------------
    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._place(QRect(0, 0, width, 0), apply=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802
        super().setGeometry(rect)
        self._place(rect, apply=True)

    def sizeHint(self) -> QSize:  # noqa: N802
        """One row of everything."""
        shown = self._shown()
        m = self.contentsMargins()
        w = sum(i.sizeHint().width() for i in shown) + self._spacing * max(0, len(shown) - 1)
        h = max((i.sizeHint().height() for i in shown), default=0)
        return QSize(w + m.left() + m.right(), h + m.top() + m.bottom())

    def minimumSize(self) -> QSize:  # noqa: N802
        """The widest single item: everything else can wrap."""
        size = QSize()
        for item in self._shown():
            size = size.expandedTo(item.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    # -- placing ---------------------------------------------------------------------------------
    def _shown(self) -> list[QLayoutItem]:
        return [i for i in self._items if not (i.widget() and i.widget().isHidden())]

    def rows(self, width: int) -> list[list[QLayoutItem]]:
        """The items of each row at `width` (content width, margins excluded)."""
        out: list[list[QLayoutItem]] = []
        x = 0
        for item in self._shown():
            w = item.sizeHint().width()
            if out and out[-1] and x + w > width:
                out.append([])
                x = 0
            if not out:
                out.append([])
            out[-1].append(item)
            x += w + self._spacing
        return out

    def _place(self, rect: QRect, apply: bool) -> int:
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        y = area.y()
        for row in self.rows(area.width()):
            hints = [i.sizeHint() for i in row]
            row_w = sum(h.width() for h in hints) + self._spacing * (len(row) - 1)
            row_h = max(h.height() for h in hints)
            x = area.x() + (max(0, area.width() - row_w) if self.align_right else 0)
            if apply:
                for item, hint in zip(row, hints):
                    item.setGeometry(QRect(QPoint(x, y + (row_h - hint.height()) // 2), hint))
                    x += hint.width() + self._spacing
            y += row_h + self._spacing
        return max(0, y - self._spacing - area.y()) + m.top() + m.bottom()


def flow_widget(*widgets: QWidget, align_right: bool = False) -> QWidget:
    """A widget holding `widgets` in a FlowLayout, as wide as its row allows."""
    holder = QWidget()
    flow = FlowLayout(holder, align_right=align_right)
    for w in widgets:
        flow.addWidget(w)
    policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
    policy.setHeightForWidth(True)
    holder.setSizePolicy(policy)
    return holder
