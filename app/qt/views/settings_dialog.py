"""Settings: alert thresholds and the theme."""

from __future__ import annotations

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                               QGroupBox, QVBoxLayout)

from ...core.alerts import AlertThresholds


def _spin(lo: float, hi: float, value: float, suffix: str, decimals: int = 0) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setDecimals(decimals)
    s.setValue(value)
    s.setSuffix(suffix)
    return s


class SettingsDialog(QDialog):
    def __init__(self, thresholds: AlertThresholds, theme: str, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(380)
        self.temperature = _spin(30, 120, thresholds.temperature_celsius, " °C")
        self.memory = _spin(10, 100, thresholds.memory_percent, " %")
        self.error_rate = _spin(0.1, 100, thresholds.error_rate_percent, " %", 1)
        self.offline_grace = _spin(0, 600, thresholds.offline_grace_seconds, " s")
        alerts = QGroupBox("Alert thresholds")
        form = QFormLayout(alerts)
        form.addRow("Device temperature at or above", self.temperature)
        form.addRow("Device memory at or above", self.memory)
        form.addRow("Failed requests at or above", self.error_rate)
        form.addRow("Offline alert after", self.offline_grace)
        self.theme = QComboBox()
        self.theme.addItems(["light", "dark"])
        self.theme.setCurrentText(theme)
        look = QGroupBox("Appearance")
        QFormLayout(look).addRow("Theme", self.theme)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(alerts)
        lay.addWidget(look)
        lay.addWidget(buttons)

    def thresholds(self) -> AlertThresholds:
        return AlertThresholds(self.temperature.value(), self.memory.value(),
                               self.error_rate.value(), self.offline_grace.value())
