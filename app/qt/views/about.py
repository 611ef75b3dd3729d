"""The About box: what this console is and the versions it runs on."""

from __future__ import annotations

import platform
from importlib import metadata

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt, qVersion
from PySide6.QtWidgets import QMessageBox, QWidget

from ... import __version__


def versions() -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"
    import pyqtgraph
    return {
        "musa-ops": __version__,
        "Python": platform.python_version(),
        "Qt": qVersion(),
        "PySide6": pyside_version,
        "pyqtgraph": pyqtgraph.__version__,
        "grpcio": dist("grpcio"),
        "protobuf": dist("protobuf"),
        "numpy": dist("numpy"),
        "SQLAlchemy": dist("SQLAlchemy"),
        "Platform": platform.platform(terse=True),
    }


def about_text() -> str:
    rows = "".join(f"<tr><td style='padding-right:14px;color:gray'>{k}</td><td>{v}</td></tr>"
                   for k, v in versions().items())
    return ("<h3>musa-console</h3><p>The operator's desk for musad nodes: fleet telemetry, "
            "deployments, a prompt playground and audit logs, on Moore Threads MUSA, NVIDIA "
            f"CUDA and CPU.</p><table>{rows}</table><p>Apache-2.0</p>")


def show_about(parent: QWidget) -> QMessageBox:
    box = QMessageBox(parent)
    box.setWindowTitle("About musa-console")
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setText(about_text())
    box.open()
    return box
