"""Open alerts as a table (severity, node, message, since), newest first."""

from __future__ import annotations

import time

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QColor

from ...core.alerts import Alert

COLUMNS = ("Severity", "Node", "Alert", "Since")
SEVERITY_COLORS = {"critical": QColor("#d0473c"), "warning": QColor("#d39a1b")}
KEY_ROLE = Qt.ItemDataRole.UserRole + 1


class AlertsModel(QAbstractTableModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._alerts: list[Alert] = []

    def set_alerts(self, alerts: list[Alert]) -> None:
        self.beginResetModel()
        self._alerts = list(alerts)
        self.endResetModel()

    def alert(self, row: int) -> Alert:
        return self._alerts[row]

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._alerts)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole \
                and 0 <= section < len(COLUMNS):
            return COLUMNS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._alerts):
            return None
        a = self._alerts[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return a.severity.capitalize()
            if col == 1:
                return a.node_label
            if col == 2:
                return a.message
            if col == 3:
                return time.strftime("%H:%M:%S", time.localtime(a.since))
        if role == Qt.ItemDataRole.ForegroundRole and col == 0:
            return SEVERITY_COLORS.get(a.severity)
        if role == Qt.ItemDataRole.ToolTipRole:
            return a.message
        if role == KEY_ROLE:
            return a.key
        return None
