"""The alerts panel (a dock): open alerts, a dismiss button, and an empty state."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QDockWidget, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QStackedWidget, QTableView, QVBoxLayout, QWidget)

from ..fleet_state import FleetState
from ..models.alerts_model import AlertsModel


class AlertsPanel(QDockWidget):
    def __init__(self, state: FleetState, parent=None) -> None:
        super().__init__("Alerts", parent)
        self.setObjectName("alertsDock")
        self.state = state
        self.model = AlertsModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        hh = self.table.horizontalHeader()
        hh.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        hh.resizeSection(0, 80)
        hh.resizeSection(1, 150)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        hh.resizeSection(3, 80)
        self.empty = QLabel("No open alerts. Thresholds are in Settings.")
        self.empty.setObjectName("emptyState")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        self.dismiss = QPushButton("Dismiss")
        self.dismiss.setToolTip("Hide the selected alert until its condition occurs again")
        self.dismiss.clicked.connect(self._dismiss)
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setContentsMargins(8, 8, 8, 8)
        lay.addWidget(self.stack)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.dismiss)
        lay.addLayout(row)
        self.setWidget(body)
        state.alerts_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        self.model.set_alerts(self.state.open_alerts())
        self.stack.setCurrentIndex(1 if self.model.rowCount() else 0)
        self.dismiss.setEnabled(self.model.rowCount() > 0)

    def _dismiss(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        for idx in rows:
            self.state.alerts.dismiss(self.model.alert(idx.row()).key)
        if rows:
            self.state.alerts_changed.emit()
