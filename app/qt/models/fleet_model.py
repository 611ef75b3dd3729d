"""The fleet table: one row per node, fed by FleetState.

Updates are coalesced: FleetState marks rows dirty as batches arrive, and the fleet view's
single refresh timer calls `flush()`, which emits dataChanged for a share of the dirty rows
on screen, one row at a time (see `flush` for why), and nothing for rows off screen.
The Devices column carries per-device tiles (DEVICES_ROLE) that FleetDelegate paints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

from ...core.nodes import UNUSABLE, ConnectionState
from ..fleet_state import FleetState

COLUMNS = ("Node", "State", "Backend", "Devices", "Models", "Run / wait", "Tokens/s", "Last seen")
COL_NODE, COL_STATE, COL_BACKEND, COL_DEVICES, COL_MODELS, COL_QUEUE, COL_TPS, COL_SEEN = range(8)

DEVICES_ROLE = Qt.ItemDataRole.UserRole + 1   # tuple[DeviceTile, ...]
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
STATE_ROLE = Qt.ItemDataRole.UserRole + 3     # ConnectionState
NODE_ID_ROLE = Qt.ItemDataRole.UserRole + 4
STAMP_ROLE = Qt.ItemDataRole.UserRole + 5     # changes whenever the row's tiles change

SPARK_POINTS = 60

STATE_COLORS = {
    ConnectionState.ONLINE: QColor("#2e9d5b"),
    ConnectionState.DEGRADED: QColor("#d39a1b"),
    ConnectionState.CONNECTING: QColor("#5b8def"),
    ConnectionState.OFFLINE: QColor("#d0473c"),
    ConnectionState.UNAUTHORIZED: QColor("#b4367a"),
}
STALE_COLOR = QColor("#8a94a6")   # what an offline node last reported


@dataclass(frozen=True)
class DeviceTile:
    index: int
    name: str
    util: float | None
    mem: float | None          # % of device memory
    temp: float | None
    power: float | None
    power_limit: float | None
    spark: np.ndarray          # recent utilisation, NaN for gaps
    mem_used: int | None = None   # bytes
    mem_total: int | None = None  # bytes
    health_reason: str | None = None  # set only when the daemon reports the device unhealthy


# The text of a device: the delegate paints it, the model gives the tooltip.
GIB = 1024 ** 3


def fmt_memory(t: DeviceTile) -> str:
    if t.mem_used is not None and t.mem_total:
        return f"{t.mem_used / GIB:.1f} / {t.mem_total / GIB:.0f} GiB"
    return "—" if t.mem is None else f"{t.mem:.0f}%"


def fmt_extras(t: DeviceTile) -> str:
    parts = ["unhealthy"] if t.health_reason is not None else []
    if t.temp is not None:
        parts.append(f"{t.temp:.0f} °C")
    if t.power is not None:
        parts.append(f"{t.power:.0f} W")
    return " · ".join(parts)


def tooltip(tiles: tuple[DeviceTile, ...]) -> str:
    def f(v, fmt):
        return "—" if v is None else fmt.format(v)
    rows = "".join(
        f"<tr><td>#{t.index}</td><td>{t.name}</td><td align=right>{f(t.util, '{:.0f}%')}</td>"
        f"<td align=right>{fmt_memory(t)}</td><td align=right>{f(t.temp, '{:.0f} °C')}</td>"
        f"<td align=right>{f(t.power, '{:.0f} W')}</td></tr>" for t in tiles)
    health = "".join(f"<br><b>#{t.index} is unhealthy: {t.health_reason}</b>"
                     for t in tiles if t.health_reason is not None)
    return ("<table cellspacing=4><tr><th></th><th align=left>Device</th><th>Util</th>"
            f"<th>Memory</th><th>Temp</th><th>Power</th></tr>{rows}</table>{health}")


def _fmt_ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


class FleetModel(QAbstractTableModel):
    def __init__(self, state: FleetState, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self._rows: list[str] = list(state.order)
        self._row_of: dict[str, int] = {nid: r for r, nid in enumerate(self._rows)}
        self._dirty: set[int] = set()
        self._tile_cache: dict[str, tuple] = {}
        state.node_added.connect(self._on_added)
        state.node_removed.connect(self._on_removed)
        state.status_changed.connect(self._mark)
        state.data_changed.connect(self._mark)

    # --- structure -------------------------------------------------------------------------

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole \
                and 0 <= section < len(COLUMNS):
            return COLUMNS[section]
        return None

    def node_id(self, row: int) -> str:
        return self._rows[row]

    def row_of(self, node_id: str) -> int:
        """O(1): called for every telemetry batch of every node."""
        return self._row_of.get(node_id, -1)

    def _on_added(self, node_id: str) -> None:
        n = len(self._rows)
        self.beginInsertRows(QModelIndex(), n, n)
        self._rows.append(node_id)
        self._row_of[node_id] = n
        self.endInsertRows()

    def _on_removed(self, node_id: str) -> None:
        row = self.row_of(node_id)
        if row < 0:
            return
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._rows[row]
        self._row_of = {nid: r for r, nid in enumerate(self._rows)}
        self.endRemoveRows()
        self._tile_cache.pop(node_id, None)
        self._dirty = {r if r < row else r - 1 for r in self._dirty if r != row}

    def _mark(self, node_id: str) -> None:
        row = self.row_of(node_id)
        if row >= 0:
            self._dirty.add(row)

    def flush(self, limit_to: set[int] | None = None, budget: int | None = None) -> None:
        """Emits dataChanged for rows that changed since they were last flushed.

        Without arguments: every dirty row (in contiguous spans). With `limit_to` (the source
        rows on screen): at most `budget` of the dirty rows on screen, so one GUI event never
        repaints the whole table. Dirty rows off screen are left dirty and cost nothing: no
        one paints them, a row scrolled into view is painted from the current data, and a
        later tick flushes it like any other row on screen.

        Rows on screen are emitted one row per signal, never as a span: the sort proxy turns
        a span of source rows into one span from the lowest to the highest proxy row, which
        would repaint (and re-render) every row on screen in between."""
        if not self._dirty:
            return
        n = len(self._rows)
        last = len(COLUMNS) - 1
        if limit_to is None:
            rows = sorted(r for r in self._dirty if r < n)
            self._dirty.clear()
            for lo, hi in _runs(rows):
                self.dataChanged.emit(self.index(lo, 0), self.index(hi, last))
            return
        on_screen = sorted(r for r in limit_to if r in self._dirty and r < n)
        if budget is not None:
            on_screen = on_screen[:budget]
        self._dirty.difference_update(on_screen)
        for r in on_screen:
            self.dataChanged.emit(self.index(r, 0), self.index(r, last))

    def dirty_rows(self) -> set[int]:
        """Rows with data not yet flushed (for tests and diagnostics)."""
        return set(self._dirty)

    # --- data ------------------------------------------------------------------------------

    def flags(self, index):
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: QModelIndex | QPersistentModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        nid = self._rows[index.row()]
        status = self.state.statuses.get(nid)
        if status is None:
            return None
        snap = self.state.latest.get(nid) if status.state not in UNUSABLE else None
        col = index.column()
        if role == NODE_ID_ROLE:
            return nid
        if role == STAMP_ROLE:
            hist = self.state.history.get(nid)
            return (hist.last_time if hist else 0.0, status.state.value,
                    len(status.info.devices) if status.info else 0)
        if role == STATE_ROLE:
            return status.state
        if role == DEVICES_ROLE:
            return self._tiles(nid) if col == COL_DEVICES else None
        if role == Qt.ItemDataRole.DisplayRole or role == SORT_ROLE:
            sort = role == SORT_ROLE
            if col == COL_NODE:
                label = status.address.label
                if sort:
                    return label.lower()
                host = status.info.hostname if status.info else ""
                return f"{label}\n{host}" if host and host != label else label
            if col == COL_STATE:
                if sort:
                    return list(ConnectionState).index(status.state)
                text = status.state.value.capitalize()
                if status.state is not ConnectionState.ONLINE and status.last_error:
                    text += f"\n{status.last_error}"
                return text
            if col == COL_BACKEND:
                return status.info.backend if status.info else ("" if sort else "—")
            if col == COL_DEVICES:
                n = len(status.info.devices) if status.info else 0
                if sort:
                    return n
                return f"{n} device{'s' if n != 1 else ''}" if status.info else "—"
            if col == COL_MODELS:
                names = ", ".join(m.model for m in snap.models) if snap else ""
                if not snap and not sort and (old := self._stale_models(nid)):
                    return f"{old} (stale)"   # last reported; the node is offline or refused us
                return names if (names or sort) else "—"
            if col == COL_QUEUE:
                if sort:
                    return snap.running + snap.waiting if snap else -1
                return f"{snap.running} / {snap.waiting}" if snap else "—"
            if col == COL_TPS:
                if sort:
                    return snap.tokens_per_second if snap else -1.0
                return f"{snap.tokens_per_second:,.0f}" if snap else "—"
            if col == COL_SEEN:
                if sort:
                    return status.last_seen
                if not status.last_seen:
                    return "never"
                if status.state is ConnectionState.ONLINE:
                    return "live"
                return _fmt_ago(max(0.0, time.time() - status.last_seen))
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_MODELS and not snap and self._stale_models(nid):
                return f"Last reported models; the node is {self.state.stale_note(nid)}."
            if col == COL_DEVICES:
                tiles = self._tiles(nid)
                return tooltip(tiles) if tiles else None
            if col in (COL_STATE, COL_NODE):
                lines = [f"{status.address.label} ({status.address.target})",
                         f"State: {status.state.value}"]
                if status.last_error:
                    lines.append(f"Last error: {status.last_error}")
                if status.info:
                    lines.append(f"musad {status.info.version} on {status.info.hostname}")
                if status.retry_in and status.state is not ConnectionState.ONLINE:
                    lines.append(f"Retrying in {status.retry_in:.0f} s")
                return "\n".join(lines)
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_STATE:
            return STATE_COLORS[status.state]
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_MODELS and not snap:
            return STALE_COLOR
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_QUEUE, COL_TPS):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _stale_models(self, nid: str) -> str:
        """The models an unusable node last reported ("" if none, or the node is usable)."""
        status = self.state.statuses.get(nid)   # stale_note's test, without formatting its time per paint
        return ", ".join(self.state.ready_models(nid)) if status and status.state in UNUSABLE else ""

    def _tiles(self, nid: str) -> tuple[DeviceTile, ...]:
        status = self.state.statuses[nid]
        hist = self.state.history.get(nid)
        stamp = (hist.last_time if hist else 0.0, status.state, status.info)
        cached = self._tile_cache.get(nid)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        tiles = self._build_tiles(nid)
        self._tile_cache[nid] = (stamp, tiles)
        return tiles

    def _build_tiles(self, nid: str) -> tuple[DeviceTile, ...]:
        status = self.state.statuses[nid]
        if status.info is None:
            return ()
        snap = self.state.latest.get(nid)
        live = snap is not None and status.state not in UNUSABLE
        samples = {d.index: d for d in snap.devices} if live else {}
        hist = self.state.history.get(nid)
        tiles = []
        for dev in status.info.devices:
            s = samples.get(dev.index)
            spark = np.empty(0)
            if hist is not None:
                spark = hist.device_tail(dev.index, "util", SPARK_POINTS)
            tiles.append(DeviceTile(
                dev.index, dev.name,
                s.utilization_percent if s else None, s.memory_percent if s else None,
                s.temperature_celsius if s else None, s.power_watts if s else None,
                s.power_limit_watts if s else None, spark,
                s.memory_used_bytes if s else None,
                (s.memory_total_bytes if s else None) or dev_total(dev),
                (s.health_reason or "no reason given") if s is not None and s.unhealthy else None))
        return tuple(tiles)


def dev_total(dev) -> int | None:
    """The device's memory size from GetInfo, when the sample lacks it."""
    return getattr(dev, "memory_total_bytes", None) or None


def _runs(rows: list[int]):
    """Contiguous runs of sorted row numbers: [1, 2, 3, 7] -> (1, 3), (7, 7)."""
    start = prev = None
    for r in rows:
        if start is None:
            start = prev = r
        elif r == prev + 1:
            prev = r
        else:
            yield start, prev
            start = prev = r
    if start is not None:
        yield start, prev
