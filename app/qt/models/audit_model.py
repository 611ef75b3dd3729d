"""Table model of the merged audit log (several daemons plus this console), paged with fetchMore.

Rows arrive newest first from an `AuditMerger` fed by the sources' fetchers (RPCs on the
NodeHub loop, store reads on the store worker). Answers come back on other threads and
are queued to the GUI thread through a signal; a generation number drops answers to an
older query after the filters changed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor

from musaops.app.services.audit_feed import (PAGE_SIZE, AuditFilterSpec, AuditMerger, AuditRow, Page,
                                             PageFetcher, merge_key)

_Index = QModelIndex | QPersistentModelIndex

COLUMNS = ("Time (UTC)", "Node", "Actor", "Role", "Action", "Target", "Outcome", "Error", "Client", "Seq")
COL_TIME, COL_NODE, COL_ACTOR, COL_ROLE, COL_ACTION, COL_TARGET, COL_OUTCOME, COL_ERROR, COL_CLIENT, COL_SEQ = range(10)
RowRole = Qt.ItemDataRole.UserRole + 1
OUTCOME_COLOURS = {"ok": QColor("#2e9d5b"), "denied": QColor("#d64545"), "failed": QColor("#d18b1f")}


def format_time(us: int) -> str:
    sec, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec)) + f".{frac // 1000:03d}"


class _PageRelay(QObject):
    """Carries pages from any thread to the GUI thread (queued connection)."""

    page = Signal(int, object)   # generation, Page


class AuditTableModel(QAbstractTableModel):
    loading_changed = Signal(bool)
    source_error = Signal(str, str)   # source id, sentence
    exhausted_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, page_size: int = PAGE_SIZE) -> None:
        super().__init__(parent)
        self.page_size = page_size
        self._rows: list[AuditRow] = []
        self._fetchers: dict[str, PageFetcher] = {}
        self._spec = AuditFilterSpec()
        self._merger = AuditMerger(())
        self._generation = 0
        self._want = 0                   # rows a fetchMore asked for and not yet delivered
        self._relay = _PageRelay()
        self._relay.page.connect(self._on_page, Qt.ConnectionType.QueuedConnection)

    # -- the query -------------------------------------------------------------------------

    @property
    def spec(self) -> AuditFilterSpec:
        return self._spec

    @property
    def fetchers(self) -> dict[str, PageFetcher]:
        return dict(self._fetchers)

    def set_query(self, fetchers: dict[str, PageFetcher], spec: AuditFilterSpec) -> None:
        """Starts over with these sources and filters; the first page is requested at once."""
        self.beginResetModel()
        self._generation += 1
        self._fetchers = dict(fetchers)
        self._spec = spec
        self._merger = AuditMerger(list(self._fetchers))
        self._rows = []
        self._want = 0
        self.endResetModel()
        self.exhausted_changed.emit(self._merger.exhausted)
        if self._fetchers:
            self.fetchMore(QModelIndex())

    def add_source(self, source: str, fetcher: PageFetcher) -> None:
        """Adds one source to the current query and asks only it: rows it holds that are
        newer than those shown are slotted in among them, older ones join the paging."""
        if source in self._fetchers:
            return
        self._fetchers[source] = fetcher
        self._spec = dataclasses.replace(self._spec, sources=(*self._spec.sources, source))
        self._merger.add_source(source, self._rows[-1] if self._rows else None)
        self.exhausted_changed.emit(False)
        if not self._rows:
            self._want = max(self._want, self.page_size)
        self._pump()

    def clear(self) -> None:
        self.set_query({}, AuditFilterSpec())

    @property
    def loading(self) -> bool:
        return self._merger.waiting

    @property
    def exhausted(self) -> bool:
        return self._merger.exhausted

    def errors(self) -> dict[str, str]:
        return self._merger.errors()

    def row_at(self, row: int) -> AuditRow:
        return self._rows[row]

    def rows(self) -> list[AuditRow]:
        return list(self._rows)

    # -- paging ----------------------------------------------------------------------------

    def canFetchMore(self, parent: _Index = QModelIndex()) -> bool:  # noqa: B008
        if parent.isValid():
            return False
        return not self._merger.exhausted and not self._merger.waiting

    def fetchMore(self, parent: _Index = QModelIndex()) -> None:  # noqa: B008
        if parent.isValid():
            return
        self._want = max(self._want, self.page_size)
        self._pump()

    def _pump(self) -> None:
        """Releases what the merger can, then asks the sources that ran dry."""
        if self._want > 0:
            ready = self._merger.take(self._want)
            if ready:
                first = len(self._rows)
                self.beginInsertRows(QModelIndex(), first, first + len(ready) - 1)
                self._rows.extend(ready)
                self.endInsertRows()
                self._want -= len(ready)
        if self._want > 0 or self._merger.catching_up():
            wanted = self._merger.wanted(late_only=self._want <= 0)
            generation = self._generation
            for source, cursor in wanted:
                self._fetchers[source].fetch(self._spec, cursor, self.page_size,
                                             lambda page, g=generation: self._relay.page.emit(g, page))
            if wanted:
                self.loading_changed.emit(True)
        if self._merger.exhausted:
            self._want = 0
            self.exhausted_changed.emit(True)

    def _on_page(self, generation: int, page: Page) -> None:
        if generation != self._generation:
            return   # an answer to a query the user has since replaced
        self._merger.add(page)
        self._insert_late(self._merger.take_late())
        if page.error:
            self.source_error.emit(page.source, page.error)
        self._pump()
        if not self._merger.waiting:
            self.loading_changed.emit(False)

    def _insert_late(self, rows: list[AuditRow]) -> None:
        """Slots a joining source's rows in among the rows shown (newest first)."""
        for row in rows:
            key = merge_key(row)
            lo, hi = 0, len(self._rows)
            while lo < hi:   # first shown row older than this one
                mid = (lo + hi) // 2
                if merge_key(self._rows[mid]) > key:
                    lo = mid + 1
                else:
                    hi = mid
            self.beginInsertRows(QModelIndex(), lo, lo)
            self._rows.insert(lo, row)
            self.endInsertRows()

    # -- the table -------------------------------------------------------------------------

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal \
                and 0 <= section < len(COLUMNS):
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        r = self._rows[index.row()]
        col = index.column()
        cells = (format_time(r.time_us), r.node, r.actor, r.role, r.action, r.target, r.outcome,
                 r.error, r.client, str(r.seq))
        if role == Qt.ItemDataRole.DisplayRole:
            return cells[col] if 0 <= col < len(COLUMNS) else None
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_OUTCOME:
            return OUTCOME_COLOURS.get(r.outcome)
        if role == Qt.ItemDataRole.ToolTipRole:
            # the cell in full (it may be elided), then the whole record: the columns a
            # narrow window scrolls to (node, role, client, error) are one hover away
            cell = f"{COLUMNS[col]}: {cells[col]}\n" if 0 <= col < len(COLUMNS) and cells[col] else ""
            lines = [f"{cells[COL_TIME]} UTC · node {r.node} · seq {r.seq}",
                     f"{r.actor} ({r.role})" + (f" from {r.client}" if r.client else ""),
                     f"{r.action} {r.target} → {r.outcome}" + (f": {r.error}" if r.error else ""),
                     f"params: {r.params_json}"] + ([f"hash: {r.hash}"] if r.hash else [])
            return cell + "\n".join(lines)
        if role == RowRole:
            return r
        return None
