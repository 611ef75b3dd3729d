"""Table model of one node's model repository, for the Models view.

One row a model (name, state with its reason, architecture, parameters, bytes on disk,
estimated memory at 16 and 32 bits as one cell (bf16 and fp16 take the same bytes; the
tooltip gives each dtype), and the live deployment). Rows are replaced wholesale from the
hub's `models` signal; when the names are unchanged only the changed cells are signalled,
so the selection and the scroll position survive a refresh.
"""

from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication, QStyle

from musaops.app.core import DeploymentInfo, ModelEntry

_Index = QModelIndex | QPersistentModelIndex

MEMORY_DTYPES = ("bfloat16", "float16", "float32")   # the order of the Memory cell
COLUMNS = (
    "Model",
    "State",
    "Architecture",
    "Params",
    "On disk",
    "Memory (16 / 32-bit)",
    "Deployment",
    "Reason",
)
COL_NAME, COL_STATE, COL_ARCH, COL_PARAMS, COL_SIZE, COL_MEMORY, COL_DEPLOYMENT, COL_REASON = range(len(COLUMNS))
NUMERIC_COLUMNS = (COL_PARAMS, COL_SIZE, COL_MEMORY)   # right-aligned, header and cells
MEMORY_TIP = ("Estimated device memory: weights plus the KV cache of one full context window,"
              " in 16-bit (bf16, fp16) / 32-bit (fp32)")

SortRole = Qt.ItemDataRole.UserRole + 1  # a plain number or string for sorting
EntryRole = Qt.ItemDataRole.UserRole + 2  # the ModelEntry itself

# State colours (readable on the light and the dark theme).
STATE_COLOURS = {
    "ready": QColor("#2e9d5b"),
    "loading": QColor("#d18b1f"),
    "pending": QColor("#d18b1f"),
    "unloading": QColor("#d18b1f"),
    "available": QColor("#6b7a90"),
    "failed": QColor("#d64545"),
    "error": QColor("#d64545"),
}
STALE_COLOUR = QColor("#8a94a6")   # a state last reported by a node that is now offline
NOTICE_COLOUR = QColor("#b7791f")  # a model the node says to take with care (random weights)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def human_count(n: int | None) -> str:
    if not n:
        return "—"
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= threshold:
            return f"{n / threshold:.1f} {suffix}"
    return str(n)


def memory_text(bf16: int | None, fp16: int | None, fp32: int | None) -> str:
    """The estimates as "16-bit / 32-bit" ("436.6 / 873.1 MiB", "784.6 KiB / 1.5 MiB", "—"
    where none); all three when bf16 and fp16 differ."""
    if bf16 is not None and fp16 is not None and bf16 != fp16:
        totals = [bf16, fp16, fp32]
    else:
        totals = [bf16 if bf16 is not None else fp16, fp32]
    cells = [human_bytes(t) if t is not None else "—" for t in totals]
    units = {c.split(" ")[1] for c in cells if c != "—"}
    if len(units) == 1 and "—" not in cells:
        return " / ".join(c.split(" ")[0] for c in cells) + f" {units.pop()}"
    return " / ".join(cells)


def deployment_text(entry: ModelEntry) -> str:
    dep = entry.deployment
    if dep is None:
        return ""
    devices = ",".join(str(i) for i in dep.device_indices) or "0"
    return f"{engine_text(dep)} · {dep.dtype} · dev {devices} · batch {dep.max_batch} · ctx {dep.max_context}"


def engine_text(dep: DeploymentInfo) -> str:
    """Which engine serves a deployment: "built-in", "vllm", "vllm tp 2"."""
    if (dep.engine or "builtin") == "builtin":
        return "built-in"
    return dep.engine + (f" tp {dep.tensor_parallel_size}" if dep.tensor_parallel_size > 1 else "")


class ModelsTableModel(QAbstractTableModel):
    """The repository of one node; `set_entries` replaces it."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[ModelEntry] = []
        self._stale = ""   # FleetState.stale_note of the node shown: its states are old news

    def set_stale(self, note: str) -> None:
        """Marks every state as last reported, not current ("" = the node is usable)."""
        if note != self._stale:
            self._stale = note
            if self._rows:
                self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(COLUMNS) - 1))

    @property
    def stale(self) -> str:
        return self._stale

    # -- updates ---------------------------------------------------------------------
    def set_entries(self, entries: Sequence[ModelEntry]) -> None:
        new = list(entries)
        if [e.name for e in new] == [e.name for e in self._rows]:
            changed = [i for i, (a, b) in enumerate(zip(self._rows, new)) if a != b]
            self._rows = new
            if changed:   # one signal for the span: the view refits its columns once, not per row
                self.dataChanged.emit(self.index(changed[0], 0), self.index(changed[-1], len(COLUMNS) - 1))
            return
        self.beginResetModel()
        self._rows = new
        self.endResetModel()

    def entries(self) -> tuple[ModelEntry, ...]:
        return tuple(self._rows)

    def entry(self, row: int) -> ModelEntry | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, name: str) -> int:
        for i, e in enumerate(self._rows):
            if e.name == name:
                return i
        return -1

    # -- Qt model API ------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(COLUMNS):
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section]
            if role == Qt.ItemDataRole.ToolTipRole:   # a header the table elides is one hover away
                return MEMORY_TIP if section == COL_MEMORY else COLUMNS[section]
            if role == Qt.ItemDataRole.TextAlignmentRole:   # headers line up with their values
                right = section in NUMERIC_COLUMNS
                return int((Qt.AlignmentFlag.AlignRight if right else Qt.AlignmentFlag.AlignLeft)
                           | Qt.AlignmentFlag.AlignVCenter)
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows) or index.column() >= len(COLUMNS):
            return None
        e = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(e, col)
        if role == SortRole:
            return self._sort_key(e, col)
        if role == EntryRole:
            return e
        if role in (Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.DecorationRole) and col == COL_STATE:
            return STALE_COLOUR if self._stale else STATE_COLOURS.get(e.state)
        if role == Qt.ItemDataRole.DecorationRole and col == COL_NAME and e.notice:
            return QApplication.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_NAME and e.notice:
            return NOTICE_COLOUR
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(e, col)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in NUMERIC_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    # -- cells ---------------------------------------------------------------------------
    @staticmethod
    def _estimate(e: ModelEntry, dtype: str):  # -> MemoryEstimate | None
        for est in e.memory_estimates:
            if est.dtype == dtype:
                return est
        return None

    def _display(self, e: ModelEntry, col: int) -> str:
        if col == COL_NAME:
            return e.name
        if col == COL_STATE:
            return f"{e.state.capitalize()} (stale)" if self._stale else e.state.capitalize()
        if col == COL_ARCH:   # a GGUF file's quantization beside it, e.g. "LlamaForCausalLM · Q4_1"
            return " · ".join(x for x in (e.architecture, e.quantization) if x) or "—"
        if col == COL_PARAMS:
            return human_count(e.parameters)
        if col == COL_SIZE:
            return human_bytes(e.size_bytes)
        if col == COL_MEMORY:
            return memory_text(*(est.total_bytes if (est := self._estimate(e, d)) else None for d in MEMORY_DTYPES))
        if col == COL_DEPLOYMENT:
            return deployment_text(e)
        if col == COL_REASON:
            return e.reason
        return ""

    def _sort_key(self, e: ModelEntry, col: int) -> Any:
        if col == COL_PARAMS:
            return int(e.parameters or 0)
        if col == COL_SIZE:
            return int(e.size_bytes or 0)
        if col == COL_MEMORY:   # by the first dtype's estimate (bf16)
            est = self._estimate(e, MEMORY_DTYPES[0])
            return int(est.total_bytes) if est else -1
        return self._display(e, col).lower()

    def _tooltip(self, e: ModelEntry, col: int) -> str | None:
        if col == COL_MEMORY:
            lines = [
                f"{dtype}: weights {human_bytes(est.weights_bytes)} + KV {human_bytes(est.kv_bytes_per_token)}/token"
                f" × {e.max_position_embeddings or '?'} tokens = {human_bytes(est.total_bytes)}"
                for dtype in MEMORY_DTYPES if (est := self._estimate(e, dtype)) is not None
            ]
            return "\n".join([MEMORY_TIP, *lines]) if lines else None
        if col == COL_ARCH:
            return self._display(e, col)
        if col == COL_STATE and self._stale:
            return f"Last reported {e.state}; the node is {self._stale}" + (f". {e.reason}" if e.reason else "")
        if col in (COL_STATE, COL_REASON) and e.reason:
            return e.reason
        if col == COL_NAME:
            parts = [e.name]
            if e.notice:
                parts.append(f"⚠ {e.notice}")
            if e.torch_dtype:
                parts.append(f"saved as {e.torch_dtype}")
            if e.max_position_embeddings:
                parts.append(f"context {e.max_position_embeddings} tokens")
            return " · ".join(parts)
        if col == COL_DEPLOYMENT and e.deployment is not None:
            d = e.deployment   # the whole text first: the cell elides
            return deployment_text(e) + "\n" + (
                f"weights {human_bytes(d.weights_bytes)}, KV cache {human_bytes(d.kv_cache_bytes)}"
                f" ({d.kv_blocks_total} blocks of {d.kv_block_size} tokens)"
            ) + (f"; engine {engine_text(d)}, child pid {d.pid}" + (f", restarted {d.restarts}×" if d.restarts else "")
                 if d.pid else "")
        return None
