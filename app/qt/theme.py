"""Light and dark themes: a palette, the QSS in resources/styles with @tokens filled in,
and SVG icons from resources/icons tinted to the theme's text colour.
"""

from __future__ import annotations

import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication

RESOURCES = Path(__file__).resolve().parent.parent / "resources"

THEMES: dict[str, dict[str, str]] = {
    "light": {
        "window": "#f4f6f9", "panel": "#ffffff", "base": "#ffffff", "alt": "#f8fafc",
        "text": "#1e293b", "muted": "#64748b", "border": "#dde3ea", "hover": "#eef2f7",
        "accent": "#1f5fd1", "accent_soft": "#dbe7fb", "ok": "#15803d", "ok_soft": "#dcfce7",
        "warn": "#b45309", "warn_soft": "#fef3c7", "danger": "#c0392b", "danger_soft": "#fde2e1",
        "chart_bg": "#ffffff", "chart_fg": "#475569",
    },
    "dark": {
        "window": "#14171c", "panel": "#1b1f26", "base": "#191d23", "alt": "#1e232a",
        "text": "#e2e8f0", "muted": "#94a3b8", "border": "#2c333d", "hover": "#262c35",
        "accent": "#5b8def", "accent_soft": "#22324f", "ok": "#4ade80", "ok_soft": "#173626",
        "warn": "#fbbf24", "warn_soft": "#3a2f12", "danger": "#f87171", "danger_soft": "#3d1d1d",
        "chart_bg": "#191d23", "chart_fg": "#a3b0c2",
    },
}


def _arrow_images(name: str) -> dict[str, str]:
    """QSS can only load images from files, so the arrow SVGs are written once per theme,
    tinted with its muted colour, to a per-user temp folder; returns @token -> path."""
    folder = Path(tempfile.gettempdir()) / f"musa-console-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, colour in (("muted", THEMES[name]["muted"]), ("disabled", THEMES[name]["border"])):
        for arrow in ("up", "down"):
            svg = (RESOURCES / "icons" / f"arrow-{arrow}.svg").read_text(encoding="utf-8")
            path = folder / f"arrow-{arrow}-{name}-{key}.svg"
            data = svg.replace("currentColor", colour)
            if not path.exists() or path.read_text(encoding="utf-8") != data:
                path.write_text(data, encoding="utf-8")
            suffix = "" if key == "muted" else "_off"
            out[f"@img_arrow_{arrow}{suffix}"] = path.as_posix()
    check = (RESOURCES / "icons" / "check.svg").read_text(encoding="utf-8").replace("currentColor", "#ffffff")
    path = folder / "check-white.svg"
    if not path.exists() or path.read_text(encoding="utf-8") != check:
        path.write_text(check, encoding="utf-8")
    out["@img_check"] = path.as_posix()
    return out


def style_sheet(name: str) -> str:
    colors = THEMES[name]
    qss = (RESOURCES / "styles" / "base.qss").read_text(encoding="utf-8")
    for token, path in sorted(_arrow_images(name).items(), key=lambda kv: len(kv[0]), reverse=True):
        qss = qss.replace(token, path)
    # Longest tokens first so @accent_soft is not eaten by @accent.
    for key in sorted(colors, key=len, reverse=True):
        qss = qss.replace(f"@{key}", colors[key])
    return qss


@lru_cache(maxsize=64)
def icon(name: str, color: str = "#1e293b", size: int = 48) -> QIcon:
    svg = (RESOURCES / "icons" / f"{name}.svg").read_text(encoding="utf-8")
    svg = svg.replace("currentColor", color)
    renderer = QSvgRenderer(QByteArray(svg.encode()))
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    renderer.render(p)
    p.end()
    return QIcon(pm)


def apply(app: QApplication, name: str) -> dict[str, str]:
    """Applies a theme to the whole application; returns its colours."""
    colors = THEMES[name]
    app.setStyle("Fusion")
    pal = QPalette()
    for role, key in ((QPalette.ColorRole.Window, "window"), (QPalette.ColorRole.Base, "base"),
                      (QPalette.ColorRole.AlternateBase, "alt"),
                      (QPalette.ColorRole.Text, "text"), (QPalette.ColorRole.WindowText, "text"),
                      (QPalette.ColorRole.ButtonText, "text"), (QPalette.ColorRole.Button, "panel"),
                      (QPalette.ColorRole.ToolTipBase, "panel"),
                      (QPalette.ColorRole.ToolTipText, "text"),
                      (QPalette.ColorRole.PlaceholderText, "muted"),
                      (QPalette.ColorRole.Highlight, "accent_soft"),
                      (QPalette.ColorRole.HighlightedText, "text")):
        pal.setColor(role, QColor(colors[key]))
    app.setPalette(pal)
    app.setStyleSheet(style_sheet(name))
    apply_charts(colors)
    return colors


def apply_charts(colors: dict[str, str]) -> None:
    """pyqtgraph defaults for new charts; a no-op until pyqtgraph is loaded (it is imported
    only when a chart is first shown, to keep the console's cold start short)."""
    pg = sys.modules.get("pyqtgraph")
    if pg is not None:
        pg.setConfigOptions(background=colors["chart_bg"], foreground=colors["chart_fg"],
                            antialias=False)
