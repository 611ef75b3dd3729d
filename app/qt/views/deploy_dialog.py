"""The deploy dialog: which model, on which nodes and devices, with which limits.

It checks memory before it lets the operator submit: the model's estimate at the chosen
dtype ("auto" as the node's GetInfo says it resolves) (weights plus the KV cache of one full context window) against the free memory of the
chosen devices in each node's latest telemetry. One dialog serves one node or many: every
checked node gets the same DeploySpec, and the Models view shows per-node progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QFrame,
    QGroupBox, QHBoxLayout, QHeaderView, QLabel, QSpinBox, QTreeWidget, QTreeWidgetItem,
    QVBoxLayout, QWidget,
)

from musaops.app.core import DeploySpec, ModelEntry, NodeInfo, Snapshot
from musaops.app.qt.models.models_model import human_bytes

DTYPES = ("auto", "bfloat16", "float16", "float32")
DEPLOYABLE_STATES = ("available", "failed")
DEPLOYED_STATES = {"ready": "already deployed on this node",
                   "loading": "already being deployed on this node",
                   "pending": "already being deployed on this node"}


@dataclass(frozen=True)
class NodeChoice:
    """What the dialog knows about one candidate node."""

    node_id: str
    label: str
    online: bool
    info: NodeInfo | None
    snapshot: Snapshot | None
    models: tuple[ModelEntry, ...]

    def model(self, name: str) -> ModelEntry | None:
        return next((m for m in self.models if m.name == name), None)


@dataclass(frozen=True)
class MemoryCheck:
    """The verdict for one node: does the model fit on the chosen devices?"""

    fits: bool
    needed_bytes: int
    free_bytes: int
    dtype: str
    sentence: str
    warning: str = ""
    deployed: bool = False   # the model already runs there: not a failed check, nothing to do


def free_memory(node: NodeChoice, device_indices: Sequence[int]) -> tuple[int, bool]:
    """Free bytes on the devices from the latest telemetry; (total, False) if no sample yet."""
    samples = {d.index: d for d in node.snapshot.devices} if node.snapshot else {}
    totals = {d.index: d.memory_total_bytes for d in node.info.devices} if node.info else {}
    free, measured = 0, True
    for idx in device_indices:
        s = samples.get(idx)
        if s is not None and s.memory_used_bytes is not None and s.memory_total_bytes:
            free += max(0, s.memory_total_bytes - s.memory_used_bytes)
        else:
            measured = False
            free += totals.get(idx, 0)
    return free, measured


def check_memory(node: NodeChoice, spec: DeploySpec) -> MemoryCheck:
    """Estimate vs free memory for one node; a sentence for the operator either way."""
    if not node.online:
        return MemoryCheck(False, 0, 0, spec.dtype, "node is not online")
    entry = node.model(spec.model)
    if entry is None:
        return MemoryCheck(False, 0, 0, spec.dtype, f"{spec.model} is not in this node's repository")
    if entry.state in DEPLOYED_STATES:
        return MemoryCheck(False, 0, 0, spec.dtype, DEPLOYED_STATES[entry.state], deployed=True)
    if entry.state not in DEPLOYABLE_STATES:
        why = f": {entry.reason}" if entry.reason else ""
        return MemoryCheck(False, 0, 0, spec.dtype, f"{spec.model} is {entry.state}{why}")
    # "auto" is what the node says it deploys this checkpoint as (GetInfo.auto_dtype, the
    # daemon's rule); a node that does not say is checked at float32, the largest estimate.
    resolved = node.info.resolve_dtype(spec.dtype, entry.torch_dtype) if node.info else None
    dtype = resolved or spec.dtype or "float32"
    est = entry.estimate(dtype)
    devices = spec.device_indices or (0,)
    known = {d.index for d in node.info.devices} if node.info else set()
    missing = [i for i in devices if known and i not in known]
    if missing:
        return MemoryCheck(False, 0, 0, dtype, f"no device {missing[0]} on this node")
    if est is None:
        return MemoryCheck(False, 0, 0, dtype, f"no memory estimate for {dtype}")
    context = spec.max_context or entry.max_position_embeddings
    if entry.max_position_embeddings and context > entry.max_position_embeddings:
        return MemoryCheck(False, 0, 0, dtype,
                           f"context {context} exceeds the model's {entry.max_position_embeddings}")
    needed = est.weights_bytes + est.kv_bytes_per_token * context
    free, measured = free_memory(node, devices)
    source = "free" if measured else "total (no telemetry yet)"
    if free and needed > free:
        return MemoryCheck(False, needed, free, dtype,
                           f"needs {human_bytes(needed)}, only {human_bytes(free)} {source}")
    warning = ""
    fraction = spec.kv_cache_fraction or (node.info.limits.default_kv_cache_fraction if node.info else 0.0)
    if fraction and free and est.kv_bytes_per_token:
        kv_tokens = int(fraction * max(0, free - est.weights_bytes) / est.kv_bytes_per_token)
        if kv_tokens < context:
            warning = f"KV cache at {fraction:.2f} holds ~{kv_tokens} tokens, less than one {context}-token context"
    return MemoryCheck(True, needed, free, dtype,
                       f"needs {human_bytes(needed)} of {human_bytes(free)} {source}", warning)


class DeployDialog(QDialog):
    """Pick model, nodes, devices, dtype and limits; `specs()` gives what to submit."""

    def __init__(self, nodes: Sequence[NodeChoice], *, node_id: str = "", model: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Deploy model")
        self.setMinimumWidth(620)
        self._nodes = list(nodes)

        self.model_box = QComboBox()
        self.dtype_box = QComboBox()
        self.dtype_box.addItems(DTYPES)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 4096)
        self.batch_spin.setSpecialValueText("node default")
        self.context_spin = QSpinBox()
        self.context_spin.setRange(0, 1 << 20)
        self.context_spin.setSingleStep(256)
        self.context_spin.setSpecialValueText("model maximum")
        self.kv_spin = QDoubleSpinBox()
        self.kv_spin.setRange(0.0, 0.95)
        self.kv_spin.setSingleStep(0.05)
        self.kv_spin.setDecimals(2)
        self.kv_spin.setSpecialValueText("node default")

        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.addRow("Model", self.model_box)
        form.addRow("Data type", self.dtype_box)
        form.addRow("Max batch", self.batch_spin)
        form.addRow("Context length", self.context_spin)
        form.addRow("KV cache fraction", self.kv_spin)

        self.devices_box = QGroupBox("Devices")
        self._devices_layout = QHBoxLayout(self.devices_box)
        self.device_checks: list[QCheckBox] = []

        self.nodes_tree = QTreeWidget()
        self.nodes_tree.setHeaderLabels(["Node", "Model state", "Memory check"])
        self.nodes_tree.setRootIsDecorated(False)
        self.nodes_tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.nodes_tree.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.nodes_tree.header().setStretchLastSection(True)
        self.nodes_tree.setMinimumHeight(110)
        for n in self._nodes:
            item = QTreeWidgetItem([n.label, "", ""])
            item.setData(0, Qt.ItemDataRole.UserRole, n.node_id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(0, Qt.CheckState.Checked if n.node_id == node_id or len(self._nodes) == 1
                               else Qt.CheckState.Unchecked)
            self.nodes_tree.addTopLevelItem(item)

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setObjectName("deploySummary")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.deploy_button = self.buttons.addButton("Deploy", QDialogButtonBox.ButtonRole.AcceptRole)
        self.deploy_button.setDefault(True)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.devices_box)
        layout.addWidget(QLabel("Nodes"))
        layout.addWidget(self.nodes_tree, 1)
        layout.addWidget(line)
        layout.addWidget(self.summary)
        layout.addWidget(self.buttons)

        self._fill_models(model)
        self._fill_devices()
        for w in (self.model_box, self.dtype_box):
            w.currentIndexChanged.connect(self._recheck)
        for w in (self.batch_spin, self.context_spin):
            w.valueChanged.connect(self._recheck)
        self.kv_spin.valueChanged.connect(self._recheck)
        self.nodes_tree.itemChanged.connect(self._on_node_toggled)
        self._recheck()

    # -- choices -----------------------------------------------------------------------
    def _fill_models(self, preferred: str) -> None:
        names: list[str] = []
        for n in self._nodes:
            for m in n.models:
                if m.name not in names and m.state != "error":
                    names.append(m.name)
        self.model_box.addItems(names)
        if preferred in names:
            self.model_box.setCurrentIndex(names.index(preferred))

    def _checked_nodes(self) -> list[NodeChoice]:
        out = []
        for i in range(self.nodes_tree.topLevelItemCount()):
            if self.nodes_tree.topLevelItem(i).checkState(0) == Qt.CheckState.Checked:
                out.append(self._nodes[i])
        return out

    def _fill_devices(self) -> None:
        while self._devices_layout.count():  # boxes and the trailing stretch
            item = self._devices_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().setParent(None)
        self.device_checks.clear()
        chosen = self._checked_nodes() or self._nodes[:1]
        count = max((len(n.info.devices) for n in chosen if n.info), default=1) or 1
        single = chosen[0] if len(chosen) == 1 else None
        for idx in range(count):
            box = QCheckBox(self._device_label(single, idx))
            box.setChecked(idx == 0)
            box.toggled.connect(self._recheck)
            self._devices_layout.addWidget(box)
            self.device_checks.append(box)
        self._devices_layout.addStretch(1)

    @staticmethod
    def _device_label(node: NodeChoice | None, idx: int) -> str:
        if node is None or node.info is None:
            return f"Device {idx} on each node"
        dev = next((d for d in node.info.devices if d.index == idx), None)
        if dev is None:
            return f"Device {idx}"
        free, measured = free_memory(node, (idx,))
        avail = f"{human_bytes(free)} free" if measured else f"{human_bytes(dev.memory_total_bytes)}"
        return f"{idx} · {dev.name} · {avail}"

    def _on_node_toggled(self, *_: object) -> None:
        before = [b.isChecked() for b in self.device_checks]
        self._fill_devices()
        for box, was in zip(self.device_checks, before):
            box.setChecked(was)
        self._recheck()

    # -- result ------------------------------------------------------------------------
    def spec(self) -> DeploySpec:
        dtype = self.dtype_box.currentText()
        return DeploySpec(
            model=self.model_box.currentText(),
            dtype="" if dtype == "auto" else dtype,
            device_indices=tuple(i for i, b in enumerate(self.device_checks) if b.isChecked()),
            max_batch=self.batch_spin.value(),
            max_context=self.context_spin.value(),
            kv_cache_fraction=round(self.kv_spin.value(), 2),
        )

    def specs(self) -> list[tuple[str, DeploySpec]]:
        """(node_id, spec) for every checked node."""
        spec = self.spec()
        return [(n.node_id, spec) for n in self._checked_nodes()]

    def checks(self) -> dict[str, MemoryCheck]:
        spec = self.spec()
        return {n.node_id: check_memory(n, spec) for n in self._checked_nodes()}

    def _recheck(self, *_: object) -> None:
        spec = self.spec()
        self.nodes_tree.blockSignals(True)
        ok_all, problems, warnings, deployed = True, [], [], []
        for i, n in enumerate(self._nodes):
            item = self.nodes_tree.topLevelItem(i)
            entry = n.model(spec.model)
            item.setText(1, entry.state if entry else "—" if n.online else "offline")
            checked = item.checkState(0) == Qt.CheckState.Checked
            if not spec.model:
                item.setText(2, "")
                continue
            verdict = check_memory(n, spec)
            mark = "" if verdict.deployed else "✓ " if verdict.fits else "✗ "
            item.setText(2, mark + verdict.sentence)
            item.setForeground(2, Qt.GlobalColor.darkGray if verdict.deployed else
                               Qt.GlobalColor.darkGreen if verdict.fits else Qt.GlobalColor.red)
            item.setToolTip(2, verdict.warning or verdict.sentence)
            if checked:
                ok_all &= verdict.fits
                if verdict.deployed:
                    deployed.append(n.label)
                elif not verdict.fits:
                    problems.append(f"{n.label}: {verdict.sentence}")
                elif verdict.warning:
                    warnings.append(f"{n.label}: {verdict.warning}")
        self.nodes_tree.blockSignals(False)
        nodes = self._checked_nodes()
        if not spec.model:
            ok_all, text = False, "This node's repository has no deployable model."
        elif not nodes:
            ok_all, text = False, "Choose at least one node."
        elif not spec.device_indices:
            ok_all, text = False, "Choose at least one device."
        elif problems:
            text = "Cannot deploy: " + "; ".join(problems)
        elif deployed:
            where = ", ".join(deployed)
            text = (f"{spec.model} is already deployed on {where}"
                    + (": uncheck it to deploy to the others." if len(deployed) < len(nodes) else "."))
        else:
            text = f"Ready to deploy {spec.model} to {len(nodes)} node{'s' if len(nodes) > 1 else ''}."
            if warnings:
                text += " Warning: " + "; ".join(warnings)
        self.summary.setText(text)
        self.summary.setStyleSheet("color: #6b7a90;" if deployed and not problems else
                                   "color: #2e9d5b;" if ok_all and not warnings else
                                   "color: #b7791f;" if ok_all else "color: #d64545;")
        self.deploy_button.setEnabled(ok_all)
