"""The deploy dialog: which model, on which nodes and devices, with which limits.

It checks memory before it lets the operator submit: the model's estimate at the chosen
dtype ("auto" as the node's GetInfo says it resolves) (weights plus the KV cache of one full context window) against the free memory of the
chosen devices in each node's latest telemetry. One dialog serves one node or many: every
checked node gets the same DeploySpec, and the Models view shows per-node progress.

The engine selector lists only the engines every checked node reports (GetInfo). The
built-in engine runs on exactly one device; vLLM takes several devices of a node as tensor
parallel ranks (on a CPU node the ranks split the cores, so the rank count is chosen
instead) and the typed options of app/core/engine_options.py. vLLM's memory rule differs:
it reserves gpu_memory_utilization of each device's total memory, which must be free, and
the model (weights plus one full context of KV cache) must fit in what it reserves.

A chosen device the node's latest telemetry reports unhealthy (DeviceSample.healthy False,
e.g. uncorrected ECC errors) shows its reason beside its check box and blocks Deploy, as
the daemon would refuse it; "Deploy anyway on the unhealthy device" sets DeploySpec.force.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QGridLayout, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QFrame,
    QGroupBox, QHBoxLayout, QHeaderView, QLabel, QSpinBox, QTreeWidget, QTreeWidgetItem,
    QVBoxLayout, QWidget,
)

from musaops.app.core import DeploySpec, DeviceSample, EngineOptions, ModelEntry, NodeInfo, Snapshot
from musaops.app.core.engine_options import (BUILTIN, GPU_MEMORY_UTILIZATION_MAX, MAX_NUM_BATCHED_TOKENS,
                                             MAX_RESTARTS, MAX_TENSOR_PARALLEL, QUANTIZATIONS, VLLM,
                                             VLLM_DEFAULT_GPU_MEMORY_UTILIZATION)
from musaops.app.qt.models.models_model import human_bytes

DTYPES = ("auto", "bfloat16", "float16", "float32")
DEPLOYABLE_STATES = ("available", "failed")
DEVICE_COLUMNS = 4   # device check boxes a row (a node of 8 GPUs: two rows)
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


def unhealthy_devices(node: NodeChoice, device_indices: Sequence[int]) -> list[DeviceSample]:
    """The chosen devices the node's latest telemetry reports unhealthy."""
    if node.snapshot is None:
        return []
    return [d for d in node.snapshot.devices if d.index in device_indices and d.unhealthy]


def health_sentence(device: DeviceSample) -> str:
    return f"device {device.index} is unhealthy: {device.health_reason or 'no reason given'}"


def check_memory(node: NodeChoice, spec: DeploySpec) -> MemoryCheck:
    """Estimate vs free memory for one node, and the health of its chosen devices (refused
    unless spec.force, as the daemon does); a sentence for the operator either way."""
    verdict = _check_fit(node, spec)
    sick = unhealthy_devices(node, spec.device_indices or (0,)) if node.online else []
    if not sick or not verdict.fits:
        return verdict
    health = "; ".join(health_sentence(d) for d in sick)
    if not spec.force:
        return replace(verdict, fits=False, sentence=f"{health} (Deploy anyway to force)")
    return replace(verdict, warning="; ".join(w for w in (f"forced: {health}", verdict.warning) if w))


def _check_fit(node: NodeChoice, spec: DeploySpec) -> MemoryCheck:
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
    engine = spec.engine or BUILTIN
    if node.info is not None and engine not in node.info.engine_names():
        return MemoryCheck(False, 0, 0, dtype, f"engine {engine} is not installed on this node")
    problem = spec.engine_options.problem(cpu_node=bool(node.info and node.info.backend == "CPU"))
    if problem:
        return MemoryCheck(False, 0, 0, dtype, problem)
    if engine == BUILTIN and len(devices) > 1:
        return MemoryCheck(False, 0, 0, dtype, "the built-in engine runs on one device; choose vllm "
                                               "for tensor parallelism")
    if engine == VLLM and node.info is not None and node.info.backend != "CPU":
        return _vllm_device_check(node, spec, dtype, needed, devices)
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


def _vllm_device_check(node: NodeChoice, spec: DeploySpec, dtype: str, needed: int,
                       devices: Sequence[int]) -> MemoryCheck:
    """vLLM's rule on GPU nodes: it takes gpu_memory_utilization of each device's total
    memory (that much must be free), and weights plus one full context of KV cache must fit
    in what it took, summed over the tensor parallel ranks."""
    util = spec.engine_options.gpu_memory_utilization or VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
    totals = {d.index: d.memory_total_bytes for d in node.info.devices} if node.info else {}
    reserved = 0
    for idx in devices:
        share = int(util * totals.get(idx, 0))
        free, measured = free_memory(node, (idx,))
        if measured and free < share:
            return MemoryCheck(False, needed, free, dtype,
                               f"vLLM takes {util:.2f} of device {idx} ({human_bytes(share)}), "
                               f"only {human_bytes(free)} free")
        reserved += share
    if reserved and needed > reserved:
        return MemoryCheck(False, needed, reserved, dtype,
                           f"needs {human_bytes(needed)}, vLLM's {util:.2f} of {len(devices)} "
                           f"device{'s' if len(devices) > 1 else ''} is {human_bytes(reserved)}")
    return MemoryCheck(True, needed, reserved, dtype,
                       f"needs {human_bytes(needed)} of the {human_bytes(reserved)} vLLM takes "
                       f"({util:.2f} of each device)")


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

        self.engine_box = QComboBox()
        self.tp_spin = QSpinBox()
        self.tp_spin.setRange(1, MAX_TENSOR_PARALLEL)
        self.tp_spin.setToolTip("vLLM tensor parallel ranks: one per checked device on GPU nodes; "
                                "on a CPU node the ranks split the cores.")
        self.options_box = self._build_options()

        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.addRow("Model", self.model_box)
        engine_row = QHBoxLayout()
        engine_row.addWidget(self.engine_box, 1)
        engine_row.addWidget(QLabel("Tensor parallel"))
        engine_row.addWidget(self.tp_spin)
        form.addRow("Engine", engine_row)
        form.addRow("Data type", self.dtype_box)
        form.addRow("Max batch", self.batch_spin)
        form.addRow("Context length", self.context_spin)
        form.addRow("KV cache fraction", self.kv_spin)

        self.devices_box = QGroupBox("Devices")
        self._devices_layout = QGridLayout(self.devices_box)   # up to DEVICE_COLUMNS a row
        self.device_checks: list[QCheckBox] = []
        self.force_check = QCheckBox("Deploy anyway on the unhealthy device")
        self.force_check.setObjectName("deployForce")
        self.force_check.setToolTip("The node refuses a device it reports unhealthy unless forced.")
        self.force_check.setVisible(False)   # shown only while a chosen device is unhealthy

        self.nodes_tree = QTreeWidget()
        self.nodes_tree.setHeaderLabels(["Node", "Model state", "Memory check"])
        self.nodes_tree.setRootIsDecorated(False)
        self.nodes_tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.nodes_tree.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.nodes_tree.header().setStretchLastSection(True)
        self.nodes_tree.setMinimumHeight(90)
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
        layout.addWidget(self.options_box)
        layout.addWidget(self.devices_box)
        layout.addWidget(self.force_check)
        layout.addWidget(QLabel("Nodes"))
        layout.addWidget(self.nodes_tree, 1)
        layout.addWidget(line)
        layout.addWidget(self.summary)
        layout.addWidget(self.buttons)

        self._fill_models(model)
        self._fill_engines()
        self._fill_devices()
        self._apply_engine()
        for w in (self.model_box, self.dtype_box, self.prefix_box, self.quant_box):
            w.currentIndexChanged.connect(self._recheck)
        self.engine_box.currentIndexChanged.connect(self._on_engine_changed)
        for w in (self.batch_spin, self.context_spin, self.tp_spin, self.batched_spin):
            w.valueChanged.connect(self._recheck)
        for d in (self.kv_spin, self.gpu_util_spin):
            d.valueChanged.connect(self._recheck)
        self.nodes_tree.itemChanged.connect(self._on_node_toggled)
        self.force_check.toggled.connect(self._recheck)
        self._recheck()

    def _build_options(self) -> QGroupBox:
        self.batched_spin = QSpinBox()
        self.batched_spin.setRange(0, MAX_NUM_BATCHED_TOKENS)
        self.batched_spin.setSingleStep(512)
        self.batched_spin.setSpecialValueText("vLLM default")
        self.prefix_box = QComboBox()
        for text, value in (("node default", None), ("on", True), ("off", False)):
            self.prefix_box.addItem(text, value)
        self.quant_box = QComboBox()
        self.quant_box.addItem("checkpoint's own", "")
        for q in QUANTIZATIONS:
            self.quant_box.addItem(q, q)
        self.gpu_util_spin = QDoubleSpinBox()
        self.gpu_util_spin.setRange(0.0, GPU_MEMORY_UTILIZATION_MAX)
        self.gpu_util_spin.setSingleStep(0.05)
        self.gpu_util_spin.setDecimals(2)
        self.gpu_util_spin.setSpecialValueText(f"vLLM default ({VLLM_DEFAULT_GPU_MEMORY_UTILIZATION:.2f})")
        self.restarts_spin = QSpinBox()   # -1 = unset: the node's engines.vllm.restarts
        self.restarts_spin.setRange(-1, MAX_RESTARTS)
        self.restarts_spin.setValue(-1)
        self.restarts_spin.setSpecialValueText("node default")
        self.restarts_spin.setToolTip("Restarts of the vLLM child after a crash while ready; then it stays FAILED.")
        box = QGroupBox("vLLM options")
        grid = QGridLayout(box)
        for i, (label, w) in enumerate((("Max batched tokens", self.batched_spin),
                                        ("Prefix caching", self.prefix_box),
                                        ("Quantization", self.quant_box),
                                        ("GPU memory utilization", self.gpu_util_spin),
                                        ("Restarts after a crash", self.restarts_spin))):
            row, col = divmod(i, 2)
            grid.addWidget(QLabel(label), row, col * 2, Qt.AlignmentFlag.AlignRight)
            grid.addWidget(w, row, col * 2 + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        return box

    # -- choices -----------------------------------------------------------------------
    def _offered_engines(self) -> list[str]:
        """Engines every checked node reports (a node without GetInfo yet: built-in only)."""
        chosen = self._checked_nodes() or self._nodes[:1]
        names: list[str] | None = None
        for n in chosen:
            have = n.info.engine_names() if n.info else (BUILTIN,)
            names = [e for e in (names if names is not None else have) if e in have]
        return names or [BUILTIN]

    def _fill_engines(self) -> None:
        current = self.engine_box.currentData() or BUILTIN
        names = self._offered_engines()
        single = self._checked_nodes()[:1] or self._nodes[:1]
        versions = {e.name: e for e in single[0].info.engines} if single and single[0].info else {}
        self.engine_box.blockSignals(True)
        self.engine_box.clear()
        for name in names:
            e = versions.get(name)
            text = "built-in (one device)" if name == BUILTIN else name
            if e is not None and e.version:
                text += f" {e.version}"
            if e is not None and e.plugins:
                text += " · " + ", ".join(f"{k} {v}" for k, v in e.plugins)
            self.engine_box.addItem(text, name)
        self.engine_box.setCurrentIndex(names.index(current) if current in names else 0)
        self.engine_box.blockSignals(False)

    def _cpu_nodes_only(self) -> bool:
        chosen = self._checked_nodes() or self._nodes[:1]
        return all(n.info is not None and n.info.backend == "CPU" for n in chosen)

    def _apply_engine(self) -> None:
        """Devices, ranks and options as the chosen engine allows them."""
        vllm = self.engine_box.currentData() == VLLM
        if not vllm:   # the built-in engine: one device
            for b in [b for b in self.device_checks if b.isChecked()][1:]:
                b.setChecked(False)
        self.options_box.setVisible(vllm)
        cpu = self._cpu_nodes_only()
        self.gpu_util_spin.setEnabled(not cpu)
        if cpu:
            self.gpu_util_spin.setValue(0.0)
            cores = min((n.info.host_cpu_count for n in (self._checked_nodes() or self._nodes[:1])
                         if n.info and n.info.host_cpu_count), default=MAX_TENSOR_PARALLEL)
            self.tp_spin.setMaximum(max(1, min(cores, MAX_TENSOR_PARALLEL)))
        self.tp_spin.setEnabled(vllm and cpu)
        if not vllm:
            self.tp_spin.setValue(1)
        elif not cpu:
            self.tp_spin.setValue(max(1, sum(b.isChecked() for b in self.device_checks)))

    def _on_engine_changed(self, *_: object) -> None:
        self._apply_engine()
        self._recheck()
        if self.isVisible():   # the vLLM options appeared or went: fit them
            self.adjustSize()

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
        while self._devices_layout.count():
            item = self._devices_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().setParent(None)
        self.device_checks.clear()
        chosen = self._checked_nodes() or self._nodes[:1]
        count = max((len(n.info.devices) for n in chosen if n.info), default=1) or 1
        single = chosen[0] if len(chosen) == 1 else None
        columns = min(count, DEVICE_COLUMNS) if count > 2 else 2
        for idx in range(count):
            label = self._device_label(single, idx)
            box = QCheckBox(label if count <= 2 else label.replace(self._device_name(single, idx), "", 1))
            box.setToolTip(label)
            if single is not None and unhealthy_devices(single, (idx,)):
                box.setStyleSheet("color: #d64545;")
            box.setChecked(idx == 0)
            box.toggled.connect(lambda on, box=box: self._on_device_toggled(box, on))
            self._devices_layout.addWidget(box, idx // columns, idx % columns)
            self.device_checks.append(box)
        for col in range(DEVICE_COLUMNS):
            self._devices_layout.setColumnStretch(col, 1 if col < columns else 0)

    @staticmethod
    def _device_name(node: NodeChoice | None, idx: int) -> str:
        """" · name" as the label shows it; many devices are labelled without it (tooltip has it)."""
        dev = next((d for d in node.info.devices if d.index == idx), None) if node and node.info else None
        return f" · {dev.name}" if dev is not None else "\0"

    @staticmethod
    def _device_label(node: NodeChoice | None, idx: int) -> str:
        if node is None or node.info is None:
            return f"Device {idx} on each node"
        dev = next((d for d in node.info.devices if d.index == idx), None)
        if dev is None:
            return f"Device {idx}"
        free, measured = free_memory(node, (idx,))
        avail = f"{human_bytes(free)} free" if measured else f"{human_bytes(dev.memory_total_bytes)}"
        sick = "".join(f" · unhealthy: {d.health_reason or 'no reason given'}"
                       for d in unhealthy_devices(node, (idx,)))
        return f"{idx} · {dev.name} · {avail}{sick}"

    def _on_device_toggled(self, box: QCheckBox, on: bool) -> None:
        if on and self.engine_box.currentData() != VLLM:   # the built-in engine: one device
            for other in self.device_checks:
                if other is not box and other.isChecked():
                    other.blockSignals(True)
                    other.setChecked(False)
                    other.blockSignals(False)
        elif self.engine_box.currentData() == VLLM and not self._cpu_nodes_only():
            self.tp_spin.setValue(max(1, sum(b.isChecked() for b in self.device_checks)))
        self._recheck()

    def _on_node_toggled(self, *_: object) -> None:
        before = [b.isChecked() for b in self.device_checks]
        self._fill_engines()
        self._fill_devices()
        for box, was in zip(self.device_checks, before):
            box.setChecked(was)
        self._apply_engine()
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
            force=self.force_check.isChecked(),   # unchecked whenever it is hidden
            **self._engine_fields(),
        )

    def _engine_fields(self) -> dict:
        engine = self.engine_box.currentData() or BUILTIN
        if engine != VLLM:   # "" = the built-in engine, as every daemon reads it
            return {}
        return {"engine": engine, "tensor_parallel_size": self.tp_spin.value(),
                "engine_options": EngineOptions(
                    max_num_batched_tokens=self.batched_spin.value(),
                    enable_prefix_caching=self.prefix_box.currentData(),
                    quantization=self.quant_box.currentData() or "",
                    gpu_memory_utilization=round(self.gpu_util_spin.value(), 2)),
                "max_restarts": None if self.restarts_spin.value() < 0 else self.restarts_spin.value()}

    def specs(self) -> list[tuple[str, DeploySpec]]:
        """(node_id, spec) for every checked node."""
        spec = self.spec()
        return [(n.node_id, spec) for n in self._checked_nodes()]

    def checks(self) -> dict[str, MemoryCheck]:
        spec = self.spec()
        return {n.node_id: check_memory(n, spec) for n in self._checked_nodes()}

    def _show_force(self, device_indices: Sequence[int]) -> None:
        """The force check box: offered only while a chosen device of a checked node is
        unhealthy; hidden, it is unchecked (so spec.force is never set unseen)."""
        sick = any(unhealthy_devices(n, device_indices) for n in self._checked_nodes() if n.online)
        if not sick and self.force_check.isChecked():
            self.force_check.blockSignals(True)
            self.force_check.setChecked(False)
            self.force_check.blockSignals(False)
        self.force_check.setVisible(sick)

    def _recheck(self, *_: object) -> None:
        self._show_force(self.spec().device_indices or (0,))
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
