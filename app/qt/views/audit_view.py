"""The Audit view: browse one or several nodes' audit logs and this console's operator log,
merged by time, filter them, export the filtered view, and verify each node's chain.

Nothing here blocks: pages come through the NodeHub (Audit.Query) and the store worker,
exports run on their own thread with a progress bar, Verify runs on the hub loop.

Nodes joining change only their own source: a row is added (or relabelled, or removed) for
that node, and while the view is shown only that node is queried, its records slotted in
among those shown. While the view is hidden nothing is queried; the query runs once when it
is next shown. (Re-querying every node for every node that joined cost O(n^2): 6.5 s of
GUI-thread time while a 200-node fleet connected.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QDateTime, QEvent, Qt, QTimer, QTimeZone, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDateTimeEdit, QFileDialog,
                               QFrame, QGridLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QProgressBar, QPushButton, QScrollArea, QSplitter, QTableView, QToolButton,
                               QVBoxLayout, QWidget)

from musaops.app.qt.fleet_state import FleetState
from musaops.app.qt.models.audit_model import (COL_ACTION, COL_ACTOR, COL_CLIENT, COL_ERROR, COL_NODE,
                                              COL_OUTCOME, COL_ROLE, COL_SEQ, COL_TARGET, COL_TIME,
                                              AuditTableModel)
from musaops.app.services.audit_feed import (CONSOLE_SOURCE, AuditClient, AuditFilterSpec,
                                             ConsoleLogFetcher, VerifyOutcome)
from musaops.app.services.export import FORMATS, AuditExportJob

from .column_fit import PAD, fit_widths
from .elided import ElidedCheckBox, ElidedLabel

ACTIONS = ("", "node.Deploy", "node.Undeploy", "inference.Generate", "token.create", "token.revoke",
           "config.change", "node.GetInfo", "node.ListModels", "telemetry.Stream", "audit.Query",
           "audit.Verify")
OUTCOMES = ("", "ok", "denied", "failed")
# The columns an operator reads (kept inside the table's width: their elastic ones elide),
# then the rest (narrowed to their content, scrolled to; each row's tooltip has them all).
PRIMARY = (COL_TIME, COL_ACTOR, COL_ACTION, COL_TARGET, COL_OUTCOME)
SECONDARY = (COL_NODE, COL_ROLE, COL_ERROR, COL_CLIENT, COL_SEQ)
ELASTIC = {COL_ACTOR: 64, COL_TARGET: 80}   # minimum widths of the primary columns that elide
SECONDARY_MAX_W = 200   # Error, Client, ... beyond this elide (when they do not all fit)
SOURCES_MIN_W, SOURCES_W = 120, 180


def _to_us(edit: QDateTimeEdit) -> int:
    return edit.dateTime().toMSecsSinceEpoch() * 1000


class _SourceRow(QWidget):
    """One source: include checkbox with its name and (for nodes) a Verify button; the verify
    result goes on a line of its own below. Name and result elide to the panel's width (the
    full text is their tooltip), so the panel can be narrow."""

    def __init__(self, source: str, label: str, verifiable: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = source
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(4)
        grid.setVerticalSpacing(0)
        self.include = ElidedCheckBox(label)
        self.include.setChecked(True)
        grid.addWidget(self.include, 0, 0)
        self.verify = QToolButton()
        self.verify.setText("Verify")
        self.verify.setObjectName(f"verify-{source}")
        self.verify.setVisible(verifiable)
        self.verify.setToolTip("Walk this node's hash chain and report the head or the first broken link")
        grid.addWidget(self.verify, 0, 1)
        self.result = ElidedLabel("")
        self.result.setObjectName(f"verify-result-{source}")
        self.result.setVisible(False)
        grid.addWidget(self.result, 1, 0, 1, 2)
        grid.setColumnStretch(0, 1)

    def show_result(self, text: str, colour: str, tooltip: str = "") -> None:
        self.result.setText(text)
        if tooltip:
            self.result.setToolTip(tooltip)
        self.result.setStyleSheet(f"color: {colour}" if colour else "")
        self.result.setVisible(bool(text))


class AuditView(QWidget):
    verify_done = Signal(object)         # VerifyOutcome (on the GUI thread)
    export_progress = Signal(float, int)  # fraction, rows written
    export_finished = Signal(int, str)    # rows, error ("" when ok)

    def __init__(self, hub: Any, bridge: Any, parent: QWidget | None = None,
                 directory: FleetState | None = None, store: Any = None) -> None:
        super().__init__(parent)
        self.hub = hub
        self.client = AuditClient(hub)
        self.directory = directory or FleetState(bridge, parent=self)
        self.store = store
        self.console_fetcher = ConsoleLogFetcher(store) if store is not None else None
        self.export_job: AuditExportJob | None = None
        self.model = AuditTableModel(self)
        bridge.audit_page.connect(self.client.deliver)
        bridge.audit_verified.connect(self.client.deliver)
        self._build()
        self._stale = True   # the shown query predates a source: run it again when shown
        self.directory.node_added.connect(self._add_node_source)
        self.directory.node_updated.connect(self._relabel_source)
        self.directory.node_removed.connect(self._remove_source)
        self.verify_done.connect(self._show_verify)
        self.export_progress.connect(self._on_export_progress)
        self.export_finished.connect(self._on_export_finished)
        self.model.loading_changed.connect(lambda _b: self._update_status())
        self.model.rowsInserted.connect(lambda *_: self._update_status())
        self.model.rowsInserted.connect(lambda *_: self._fit_columns())
        self.model.modelReset.connect(lambda: setattr(self, "_fitted", False))
        self.model.source_error.connect(lambda *_: self._update_status())
        for node_id in self.directory.node_ids():
            self._add_source(node_id, self.directory.label(node_id), True)
        if self.console_fetcher is not None:
            self._add_source(CONSOLE_SOURCE, "This console (operator log)", False)

    # -- layout ------------------------------------------------------------------------------

    def _build(self) -> None:
        utc = QTimeZone.utc()
        now = QDateTime.currentDateTimeUtc()
        self.since_on = QCheckBox("From")
        self.since = QDateTimeEdit(now.addDays(-7))
        self.until_on = QCheckBox("Until")
        self.until_on.setToolTip("Times are UTC; the default is when this view opened")
        self.until = QDateTimeEdit(now)
        for edit in (self.since, self.until):
            if hasattr(edit, "setTimeZone"):      # Qt >= 6.7
                edit.setTimeZone(utc)
            else:
                edit.setTimeSpec(Qt.TimeSpec.UTC)
            edit.setDisplayFormat("yyyy-MM-dd HH:mm:ss 'UTC'")
            edit.setCalendarPopup(True)
            # the text, the frame and the calendar button: the date is never cut
            edit.setMinimumWidth(edit.fontMetrics().horizontalAdvance("2026-11-30 23:59:59 UTC") + 64)
        self.actor = QLineEdit()
        self.actor.setPlaceholderText("any actor")
        self.action = QComboBox()
        self.action.setEditable(True)
        self.action.addItems(ACTIONS)
        self.action.lineEdit().setPlaceholderText("any action")
        self.outcome = QComboBox()
        self.outcome.addItems(["any", "ok", "denied", "failed"])
        self.apply_button = QPushButton("Apply")
        self.apply_button.setDefault(True)
        self.apply_button.clicked.connect(self.apply_filters)

        filters = QGridLayout()
        filters.addWidget(self.since_on, 0, 0)
        filters.addWidget(self.since, 0, 1)
        filters.addWidget(self.until_on, 0, 2)
        filters.addWidget(self.until, 0, 3)
        filters.addWidget(QLabel("Actor"), 1, 0)
        filters.addWidget(self.actor, 1, 1)
        filters.addWidget(QLabel("Action"), 1, 2)
        filters.addWidget(self.action, 1, 3)
        # Six columns, not seven: the filters fit a 1024 px window with the dates in full.
        filters.addWidget(QLabel("Outcome"), 0, 4)
        filters.addWidget(self.outcome, 0, 5)
        filters.addWidget(self.apply_button, 1, 5)
        filters.setColumnStretch(6, 1)   # spare width goes to the right, not into the fields
        filters.setHorizontalSpacing(8)

        self.sources_box = QGroupBox("Sources")
        box_layout = QVBoxLayout(self.sources_box)
        box_layout.setContentsMargins(6, 6, 6, 6)
        self.sources_list = sources_list = QWidget()
        self.sources_layout = QVBoxLayout(sources_list)
        self.sources_layout.setContentsMargins(0, 0, 0, 0)
        self.sources_layout.setSpacing(4)
        self.sources_layout.addStretch(1)
        scroll = QScrollArea()   # a fleet's worth of nodes scrolls instead of growing the view
        scroll.setWidget(sources_list)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        box_layout.addWidget(scroll)
        self.source_rows: dict[str, _SourceRow] = {}

        self.table = QTableView()
        self.table.setObjectName("audit-table")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.setHorizontalScrollMode(QTableView.ScrollMode.ScrollPerPixel)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(40)
        header.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)   # each cell's tooltip is the whole record
        # What happened first (Time, Actor, Action, Target, Outcome), the rest after Outcome.
        for visual, col in enumerate((*PRIMARY, *SECONDARY)):
            header.moveSection(header.visualIndex(col), visual)
        fm = self.table.fontMetrics()
        # Before the first page: the widths of typical values (replaced by the records' own).
        self._contents = {col: fm.horizontalAdvance(sample) + 2 * PAD + 8 for col, sample in (
            (COL_TIME, "2026-11-30 12:14:44.758"), (COL_NODE, "gpu-node-01"), (COL_ACTOR, "anonymous"),
            (COL_ROLE, "operator"), (COL_ACTION, "inference.Generate"), (COL_OUTCOME, "denied"),
            (COL_TARGET, "tiny-llama-7b"), (COL_ERROR, "model not found"),
            (COL_CLIENT, "ipv4:127.0.0.1:65535"), (COL_SEQ, "000000"))}
        self.table.viewport().installEventFilter(self)   # refit when the table's width changes
        self._fit_columns()

        self.status = QLabel("")
        self.status.setObjectName("audit-status")
        self.status.setWordWrap(True)   # long per-source errors must not widen the view
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.format = QComboBox()
        self.format.addItems(list(FORMATS))
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self._ask_export)
        self.cancel_button = QPushButton("Cancel export")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_export)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setVisible(False)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.progress)
        bottom.addWidget(QLabel("Format"))
        bottom.addWidget(self.format)
        bottom.addWidget(self.export_button)
        bottom.addWidget(self.cancel_button)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.sources_box)
        split.addWidget(self.table)
        split.setStretchFactor(1, 4)
        split.setChildrenCollapsible(False)
        self.sources_box.setMinimumWidth(SOURCES_MIN_W)   # names elide; drag the splitter to widen
        split.setSizes([SOURCES_W, 10_000])   # the table gets the rest of the width
        split.splitterMoved.connect(lambda *_: setattr(self, "_sources_sized", True))
        split.installEventFilter(self)
        self.splitter = split
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)   # same page margins as the other views
        layout.setSpacing(8)
        layout.addLayout(filters)
        layout.addWidget(split, 1)
        layout.addLayout(bottom)

    # -- sources -----------------------------------------------------------------------------

    def _add_source(self, source: str, label: str, verifiable: bool) -> None:
        if source in self.source_rows:
            return
        row = self.source_rows[source] = _SourceRow(source, label, verifiable)
        row.verify.clicked.connect(lambda _=False, s=source: self.verify(s))
        self.sources_layout.insertWidget(self.sources_layout.count() - 1, row)
        self._size_sources()
        if self.isVisible() and not self._stale:   # show its records too, asking only it
            fetcher = self._fetchers([source]).get(source)
            if fetcher is not None:
                self.model.add_source(source, fetcher)
                self._update_status()
        else:
            self._stale = True

    def _add_node_source(self, node_id: str) -> None:
        self._add_source(node_id, self.directory.label(node_id), True)

    def _relabel_source(self, node_id: str) -> None:
        row = self.source_rows.get(node_id)
        if row is not None:
            label = self.directory.label(node_id)
            if row.include.text() != label:
                row.include.setText(label)   # and its tooltip

    def _remove_source(self, node_id: str) -> None:
        """Its row goes; records already shown stay until the filters are applied again."""
        row = self.source_rows.pop(node_id, None)
        if row is not None:
            row.deleteLater()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        super().showEvent(event)
        if self._stale:
            self.apply_filters()

    def _size_sources(self) -> None:
        """Until the splitter is dragged, the sources get their names' width, within
        SOURCES_W .. a fifth of the view (full names in a wide window, elided in a small one)."""
        if getattr(self, "_sources_sized", False):
            return
        total = sum(self.splitter.sizes())
        names = max((row.sizeHint().width() for row in self.source_rows.values()), default=0)
        frame = self.sources_box.width() - self.sources_list.width()   # margins, frame, scrollbar
        want = max(SOURCES_W, min(names + max(frame, 24), total // 5))
        if total > want and self.splitter.sizes()[0] != want:
            self.splitter.setSizes([want, total - want])

    def _fit_columns(self) -> None:
        """Fits the columns to the table's width: all of them when they fit (Error takes the
        room left), else the primary ones (Actor and Target elide first) with the rest after
        them, reached by scrolling. Content widths are measured once per query, from the
        first page (Qt samples at most a few hundred rows); a resize only redistributes."""
        header = self.table.horizontalHeader()
        if not getattr(self, "_fitted", False) and self.model.rowCount():
            self._fitted = True
            for col in range(self.model.columnCount()):
                self._contents[col] = max(0, self.table.sizeHintForColumn(col)) + PAD
        cols = [*PRIMARY, *SECONDARY]
        contents = [self._contents[c] for c in cols]
        wants = [max(self._contents[c], header.sectionSizeHint(c)) for c in cols]
        room = self.table.viewport().width()
        if sum(wants) <= room:
            widths = fit_widths(wants, contents, {}, cols.index(COL_ERROR), room)
        else:
            n = len(PRIMARY)
            elastic = {i: ELASTIC[c] for i, c in enumerate(PRIMARY) if c in ELASTIC}
            widths = fit_widths(wants[:n], contents[:n], elastic, None, room)
            widths += [min(w, SECONDARY_MAX_W) for w in wants[n:]]
        for col, width in zip(cols, widths):
            header.resizeSection(col, width)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt name)
        if event.type() == QEvent.Type.Resize:
            if obj is self.table.viewport():
                self._fit_columns()
            elif obj is self.splitter:   # after the splitter has laid out its new width
                QTimer.singleShot(0, self._size_sources)
        return super().eventFilter(obj, event)

    def selected_sources(self) -> list[str]:
        return [s for s, row in self.source_rows.items() if row.include.isChecked()]

    def current_spec(self) -> AuditFilterSpec:
        outcome = self.outcome.currentText()
        return AuditFilterSpec(
            since_us=_to_us(self.since) if self.since_on.isChecked() else 0,
            until_us=_to_us(self.until) if self.until_on.isChecked() else 0,
            actor=self.actor.text().strip(), action=self.action.currentText().strip(),
            outcome="" if outcome == "any" else outcome, sources=tuple(self.selected_sources()))

    def _fetchers(self, sources: list[str] | tuple[str, ...]) -> dict:
        out = {}
        for s in sources:
            if s == CONSOLE_SOURCE:
                if self.console_fetcher is not None:
                    out[s] = self.console_fetcher
            else:
                out[s] = self.client.fetcher(s)
        return out

    def apply_filters(self) -> None:
        spec = self.current_spec()
        if spec.since_us and spec.until_us and spec.until_us <= spec.since_us:
            self.status.setText("“Until” must be later than “From”.")
            return
        self.model.set_query(self._fetchers(spec.sources), spec)
        self._stale = False
        self._update_status()

    def _update_status(self) -> None:
        n = self.model.rowCount()
        parts = [f"{n} record{'s' if n != 1 else ''}"]
        if self.model.loading:
            parts.append("loading…")
        elif self.model.exhausted:
            parts.append("all loaded")
        else:
            parts.append("scroll for more")
        for source, err in self.model.errors().items():
            row = self.source_rows.get(source)
            parts.append(f"{row.include.text() if row else source}: {err}")
        self.status.setText(" · ".join(parts))

    # -- verify ------------------------------------------------------------------------------

    def verify(self, source: str) -> None:
        row = self.source_rows.get(source)
        if row is not None:
            row.show_result("verifying…", "")
            row.verify.setEnabled(False)
        self.client.verify(source, self.verify_done.emit)

    def _show_verify(self, v: VerifyOutcome) -> None:
        row = self.source_rows.get(v.source)
        if row is None:
            return
        row.verify.setEnabled(True)
        if v.error:
            row.show_result(f"could not verify: {v.error}", "#d18b1f")
        elif v.ok:
            text = f"✓ {v.records} records, head {v.head_hash[:12]}"
            row.show_result(text, "#2e9d5b", f"✓ {v.records} records, head {v.head_hash}")
        else:
            row.show_result(f"✗ broken at record {v.first_broken_seq}: {v.reason}", "#d64545")

    # -- export ------------------------------------------------------------------------------

    def _ask_export(self) -> None:
        fmt = self.format.currentText()
        path, _ = QFileDialog.getSaveFileName(self, "Export audit records", f"audit.{fmt}",
                                              f"{fmt.upper()} (*.{fmt})")
        if path:
            self.start_export(path, fmt)

    def start_export(self, path: str | Path, fmt: str) -> AuditExportJob | None:
        """Exports everything the current filters match (not only the loaded rows)."""
        if self.export_job is not None:
            return None
        spec = self.model.spec
        self.export_job = AuditExportJob(self._fetchers(spec.sources), spec, path, fmt,
                                         progress=self.export_progress.emit,
                                         done=self.export_finished.emit)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.export_button.setEnabled(False)
        self.status.setText(f"exporting to {path}…")
        return self.export_job.start()

    def cancel_export(self) -> None:
        if self.export_job is not None:
            self.export_job.cancel()

    def _on_export_progress(self, fraction: float, rows: int) -> None:
        self.progress.setValue(int(fraction * 1000))
        self.progress.setFormat(f"{rows} records · %p%")

    def _on_export_finished(self, rows: int, error: str) -> None:
        job, self.export_job = self.export_job, None
        if job is not None:
            job.join(5)
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self.export_button.setEnabled(True)
        path = job.path if job is not None else ""
        self.status.setText(f"export failed: {error}" if error and not Path(path).exists()
                            else f"exported {rows} records to {path}" + (f" ({error})" if error else ""))

    def closeEvent(self, event: Any) -> None:  # noqa: N802
        self.cancel_export()
        super().closeEvent(event)
