"""One running deploy, as a row: node and model, the daemon's stages, a bar and Cancel.

The bar spans the whole deploy (validating, loading weights, allocating the KV cache,
warming up); within a stage it follows the daemon's `fraction`, and while weights load it
says how many bytes are in. The row ends green (ready, with the time it took) or red (the
daemon's reason), and Cancel becomes Dismiss.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from musaops.app.core import DeployEvent
from musaops.app.qt.models.models_model import human_bytes

STAGES = ("validating", "loading_weights", "allocating_kv_cache", "warming_up", "ready")
STAGE_TITLES = {
    "validating": "Validate",
    "loading_weights": "Load weights",
    "allocating_kv_cache": "KV cache",
    "warming_up": "Warm up",
    "ready": "Ready",
}
# Share of the bar each stage fills (weights dominate a real load).
_SPAN = {"validating": (0, 5), "loading_weights": (5, 75), "allocating_kv_cache": (75, 88),
         "warming_up": (88, 100), "ready": (100, 100)}


def overall_percent(stage: str, fraction: float) -> int:
    lo, hi = _SPAN.get(stage, (0, 0))
    return int(lo + (hi - lo) * max(0.0, min(1.0, fraction)))


class DeployProgressRow(QFrame):
    """Progress of one (node, model) deploy; emits cancel_requested(op_id) / dismissed(op_id)."""

    cancel_requested = Signal(str)
    dismissed = Signal(str)

    def __init__(self, op_id: str, node_label: str, model: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("deployRow")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.op_id = op_id
        self.stage = "validating"
        self.done = False
        self.ok = False

        self.title = QLabel(f"<b>{model}</b> → {node_label}")
        self.steps: dict[str, QLabel] = {}
        steps_row = QHBoxLayout()
        steps_row.setSpacing(4)
        for i, stage in enumerate(STAGES):
            if i:
                arrow = QLabel("›")
                arrow.setStyleSheet("color: #8a94a6;")
                steps_row.addWidget(arrow)
            lab = QLabel(STAGE_TITLES[stage])
            lab.setObjectName(f"step_{stage}")
            self.steps[stage] = lab
            steps_row.addWidget(lab)
        steps_row.addStretch(1)
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setTextVisible(True)
        self.bar.setFixedHeight(16)
        self.detail = QLabel("Waiting for the node…")
        self.detail.setWordWrap(True)
        self.detail.setStyleSheet("color: #6b7a90;")
        self.button = QPushButton("Cancel")
        self.button.setToolTip("Cancel the Deploy RPC; the node stops loading")
        self.button.clicked.connect(self._on_button)

        top = QHBoxLayout()
        top.addWidget(self.title)
        top.addStretch(1)
        top.addWidget(self.button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(4)
        layout.addLayout(top)
        layout.addLayout(steps_row)
        layout.addWidget(self.bar)
        layout.addWidget(self.detail)
        self._paint_steps()

    def _on_button(self) -> None:
        if self.done:
            self.dismissed.emit(self.op_id)
        else:
            self.button.setEnabled(False)
            self.detail.setText("Cancelling…")
            self.cancel_requested.emit(self.op_id)

    def _paint_steps(self) -> None:
        reached = STAGES.index(self.stage) if self.stage in STAGES else -1
        for i, stage in enumerate(STAGES):
            lab = self.steps[stage]
            if self.done and not self.ok and i == max(reached, 0):
                style = "color: #d64545; font-weight: 600;"
            elif i < reached or (self.ok and i == reached):
                style = "color: #2e9d5b;"
            elif i == reached and not self.done:
                style = "color: #2f6fde; font-weight: 600;"
            else:
                style = "color: #8a94a6;"
            lab.setStyleSheet(style)

    def apply(self, event: DeployEvent) -> None:
        """Shows one DeployEvent from the hub."""
        if event.stage in STAGES:
            self.stage = event.stage
        if event.done:
            self.done, self.ok = True, event.ok
            self.button.setText("Dismiss")
            self.button.setEnabled(True)
            self.button.setToolTip("")
        if event.ok:
            self.bar.setValue(100)
            took = f" in {event.elapsed_seconds:.1f} s" if event.elapsed_seconds else ""
            self.detail.setText(f"Ready{took}. {event.message}".strip())
            self.detail.setStyleSheet("color: #2e9d5b;")
        elif event.done:
            verb = "Cancelled" if event.stage == "cancelled" else "Failed"
            self.detail.setText(f"{verb}: {event.message}" if event.message else verb)
            self.detail.setStyleSheet("color: #d64545;")
            self.bar.setStyleSheet("QProgressBar::chunk { background: #d64545; }")
        else:
            self.bar.setValue(overall_percent(event.stage, event.fraction))
            text = event.message or STAGE_TITLES.get(event.stage, event.stage)
            if event.stage == "loading_weights" and event.total_bytes:
                text = f"Loading weights: {human_bytes(event.done_bytes)} of {human_bytes(event.total_bytes)}"
            self.detail.setText(text)
        self._paint_steps()
