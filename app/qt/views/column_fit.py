"""Table columns that fit the table's width instead of scrolling sideways.

Each visible column wants max(its content, its header). When the wants do not fit, the
elastic columns (names, free text; their cells elide and carry the full text as a
tooltip) give way first, down to their minimum; then every column gives up the part of
its header wider than its content (the header elides, its tooltip says it whole), so
numbers and dates are never cut. Room left over goes to the stretch column. Refitted
when the viewport is resized and whenever the view calls `fit()` after new rows.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QHeaderView, QTableView

PAD = 4   # a little air beyond Qt's own size hint


def shrink(wants: list[int], floors: list[int], need: int) -> list[int]:
    """Takes `need` px from `wants`, from each in proportion to what it has above its floor."""
    slack = [max(0, w - f) for w, f in zip(wants, floors)]
    total = sum(slack)
    if need <= 0 or total == 0:
        return list(wants)
    if need >= total:
        return [min(w, f) for w, f in zip(wants, floors)]
    out = [w - s * need // total for w, s in zip(wants, slack)]
    over = sum(out) - (sum(wants) - need)       # integer rounding: take the rest from the widest
    for i in sorted(range(len(out)), key=lambda i: -slack[i]):
        if over <= 0:
            break
        take = min(over, out[i] - floors[i])
        out[i] -= take
        over -= take
    return out


def fit_widths(wants: list[int], contents: list[int], elastic: dict[int, int], stretch: int | None,
               room: int) -> list[int]:
    """The widths (by position in `wants`) that fit `room`; see the module's docstring."""
    widths = list(wants)
    need = sum(widths) - room
    if need > 0:   # 1: elastic columns down to their minimum
        floors = [min(w, elastic[i]) if i in elastic else w for i, w in enumerate(widths)]
        widths = shrink(widths, floors, need)
        need = sum(widths) - room
    if need > 0:   # 2: headers wider than their content elide
        floors = [w if i in elastic else min(w, c) for i, (w, c) in enumerate(zip(widths, contents))]
        widths = shrink(widths, floors, need)
    elif stretch is not None and stretch < len(widths):
        widths[stretch] -= need   # need <= 0: the room left over
    return widths


class ColumnFitter(QObject):
    """Keeps `table`'s columns fitted; `elastic` maps a column to its minimum width."""

    def __init__(self, table: QTableView, elastic: dict[int, int], stretch: int | None = None) -> None:
        super().__init__(table)
        self.table, self.elastic, self.stretch = table, elastic, stretch
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        table.setTextElideMode(Qt.TextElideMode.ElideRight)
        table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        table.viewport().installEventFilter(self)
        self._fitting = False

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.Resize:
            self.fit()
        return False

    def fit(self) -> None:
        if self._fitting:
            return
        self._fitting = True
        try:
            t, header = self.table, self.table.horizontalHeader()
            cols = [c for c in range(header.count()) if not header.isSectionHidden(c)]
            contents = [max(0, t.sizeHintForColumn(c)) + PAD for c in cols]
            wants = [max(content, header.sectionSizeHint(c)) for c, content in zip(cols, contents)]
            elastic = {i: self.elastic[c] for i, c in enumerate(cols) if c in self.elastic}
            stretch = cols.index(self.stretch) if self.stretch in cols else None
            for c, w in zip(cols, fit_widths(wants, contents, elastic, stretch, t.viewport().width())):
                header.resizeSection(c, w)
        finally:
            self._fitting = False
