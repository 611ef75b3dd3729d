"""The Playground's building blocks: target pickers, the transcript, compare panes, and the
small text helpers (stop-sequence escapes, the per-response stats line).

Kept apart from playground_view.py so the view module holds only the request/stream logic.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QComboBox, QFrame, QHBoxLayout, QLabel, QTextEdit, QVBoxLayout, QWidget

from musaops.app.core import GenerationDone
from musaops.app.qt.fleet_state import FleetState

_ROLE_COLOURS = {"user": "#2f6fde", "assistant": "#2e9d5b", "system": "#8a5cd6"}
_ROLE_TITLES = {"user": "You", "assistant": "Assistant", "system": "System"}


def parse_stops(text: str) -> tuple[str, ...]:
    r"""One stop sequence a line; `\n` and `\t` are written as escapes."""
    out = []
    for line in text.splitlines():
        if line:
            out.append(line.replace("\\n", "\n").replace("\\t", "\t"))
    return tuple(out)


def format_stops(stops: tuple[str, ...]) -> str:
    return "\n".join(s.replace("\n", "\\n").replace("\t", "\\t") for s in stops)


def stats_text(done: GenerationDone) -> str:
    """The per-response line: tokens, TTFT, tokens/s and finish reason."""
    t, u = done.timings, done.usage
    rate = t.tokens_per_second
    if not rate and u.completion_tokens and t.total_ms > t.ttft_ms:
        rate = 1000.0 * max(u.completion_tokens - 1, 1) / (t.total_ms - t.ttft_ms)
    parts = [f"prompt {u.prompt_tokens} tok", f"completion {u.completion_tokens} tok"]
    if t.ttft_ms:
        parts.append(f"TTFT {t.ttft_ms:.0f} ms")
    if rate:
        parts.append(f"{rate:.1f} tok/s")
    reason = done.finish_reason + (f" ({done.stop!r})" if done.stop else "")
    parts.append(reason)
    return "  ·  ".join(parts)


class TargetPicker(QWidget):
    """Node and model combo boxes, filled from the FleetState (ready models only).

    The node box is updated in place for the one node a directory signal names (at 200
    nodes, five pickers refilling every node on every change cost 1.35 s of GUI time while
    the fleet connected); the model box is refilled only when the chosen node changed."""

    changed = Signal()

    def __init__(self, directory: FleetState, parent: QWidget | None = None, *, stacked: bool = False) -> None:
        super().__init__(parent)
        self.directory = directory
        self.node_box = QComboBox()
        self.model_box = QComboBox()
        for box in (self.node_box, self.model_box):
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(8)
            box.setToolTip("Node" if box is self.node_box else "Deployed model")
        layout = QVBoxLayout(self) if stacked else QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.node_box, 1)
        layout.addWidget(self.model_box, 1)
        self.node_box.currentIndexChanged.connect(self._fill_models)
        self.model_box.currentIndexChanged.connect(lambda _i: self.changed.emit())
        directory.node_added.connect(self._node_added)
        directory.node_updated.connect(self._node_updated)
        directory.node_removed.connect(self._node_gone)
        directory.models_changed.connect(lambda _n: self._fill_models())
        self.refill()

    def node_id(self) -> str:
        return self.node_box.currentData() or ""

    def model(self) -> str:
        return self.model_box.currentText()

    def set_target(self, node_id: str, model: str = "") -> None:
        i = self.node_box.findData(node_id)
        if i >= 0:
            self.node_box.setCurrentIndex(i)
        j = self.model_box.findText(model) if model else -1
        if j >= 0:
            self.model_box.setCurrentIndex(j)

    def _node_text(self, node_id: str) -> str:
        """The node's label; an offline or unauthorized one says its models are its last word."""
        stale = self.directory.stale_note(node_id)
        return f"{self.directory.label(node_id)}  ·  stale: {stale}" if stale else self.directory.label(node_id)

    def notice(self) -> str:
        """The chosen model's notice from its node (e.g. random weights), or ""."""
        return self.directory.model_notice(self.node_id(), self.model()) if self.model() else ""

    def refill(self) -> None:
        current = self.node_id()
        self.node_box.blockSignals(True)
        self.node_box.clear()
        for nid in self.directory.node_ids():
            self.node_box.addItem(self._node_text(nid), nid)
        i = self.node_box.findData(current)
        self.node_box.setCurrentIndex(i if i >= 0 else 0 if self.node_box.count() else -1)
        self.node_box.blockSignals(False)
        self._fill_models()

    def _node_added(self, node_id: str) -> None:
        if self.node_box.findData(node_id) >= 0:
            return
        first = self.node_box.currentIndex() < 0
        self.node_box.blockSignals(True)
        self.node_box.addItem(self._node_text(node_id), node_id)
        if first:
            self.node_box.setCurrentIndex(0)
        self.node_box.blockSignals(False)
        if first:
            self._fill_models()

    def _node_updated(self, node_id: str) -> None:
        i = self.node_box.findData(node_id)
        if i < 0:
            return
        label = self._node_text(node_id)
        if self.node_box.itemText(i) != label:
            self.node_box.setItemText(i, label)
        if i == self.node_box.currentIndex():
            self._fill_models()

    def _node_gone(self, node_id: str) -> None:
        i = self.node_box.findData(node_id)
        if i < 0:
            return
        was_current = i == self.node_box.currentIndex()
        self.node_box.blockSignals(True)
        self.node_box.removeItem(i)
        if was_current:
            self.node_box.setCurrentIndex(0 if self.node_box.count() else -1)
        self.node_box.blockSignals(False)
        if was_current:
            self._fill_models()

    def _fill_models(self, *_: object) -> None:
        current = self.model()
        names = self.directory.ready_models(self.node_id()) if self.node_id() else []
        self.model_box.blockSignals(True)
        self.model_box.clear()
        self.model_box.addItems(names)
        stale = self.directory.stale_note(self.node_id()) if self.node_id() else ""
        for i, name in enumerate(names):
            notice = self.directory.model_notice(self.node_id(), name)
            tip = "; ".join(t for t in (f"⚠ {notice}" if notice else "",
                                        f"last reported deployed; the node is {stale}" if stale else "") if t)
            self.model_box.setItemData(i, tip or "Deployed model", Qt.ItemDataRole.ToolTipRole)
        # With a placeholder set, Qt does not pick the first item by itself.
        self.model_box.setCurrentIndex(names.index(current) if current in names else 0 if names else -1)
        self.model_box.setPlaceholderText("no model deployed" if self.node_id() else "no node")
        self.model_box.blockSignals(False)
        self.changed.emit()


class ResizedWidget(QWidget):
    """A plain widget that says when its size changed (the compare page reflows its panes)."""

    resized = Signal()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        super().resizeEvent(event)
        self.resized.emit()


class Transcript(QTextEdit):
    """A read-only conversation: role headings, streamed text, a stats line per answer."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setObjectName("transcript")
        self.document().setDocumentMargin(12)

    def _cursor(self) -> QTextCursor:
        cur = self.textCursor()
        cur.movePosition(QTextCursor.MoveOperation.End)
        return cur

    def add_heading(self, role: str, title: str = "") -> None:
        cur = self._cursor()
        if not self.document().isEmpty():
            cur.insertBlock()
            cur.insertBlock()
        fmt = QTextCharFormat()
        fmt.setFontWeight(QFont.Weight.DemiBold)
        fmt.setForeground(QColor(_ROLE_COLOURS.get(role, "#444")))
        cur.insertText(title or _ROLE_TITLES.get(role, role), fmt)
        cur.insertBlock()

    def append_text(self, text: str, colour: str = "") -> None:
        cur = self._cursor()
        fmt = QTextCharFormat()
        if colour:
            fmt.setForeground(QColor(colour))
        cur.insertText(text, fmt)
        self.ensureCursorVisible()

    def add_stats(self, text: str, colour: str = "#6b7a90") -> None:
        cur = self._cursor()
        cur.insertBlock()
        fmt = QTextCharFormat()
        fmt.setForeground(QColor(colour))
        fmt.setFontPointSize(max(7.0, self.font().pointSizeF() - 1))
        cur.insertText(text, fmt)
        self.ensureCursorVisible()


class ComparePane(QFrame):
    """One target of compare mode: its picker, its streamed answer, its stats."""

    def __init__(self, directory: FleetState, index: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("comparePane")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.picker = TargetPicker(directory, stacked=True)
        self.output = Transcript()
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        self.stats.setStyleSheet("color: #6b7a90;")
        title = QLabel(f"Target {index + 1}")
        title.setStyleSheet("font-weight: 600;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(title)
        layout.addWidget(self.picker)
        layout.addWidget(self.output, 1)
        layout.addWidget(self.stats)
        self.text = ""

    def begin(self) -> None:
        self.output.clear()
        self.text = ""
        self.stats.setText("Waiting for the first token…")
        self.stats.setStyleSheet("color: #6b7a90;")
