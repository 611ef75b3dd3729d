"""The console bundle's fast parts: .desktop entry, icons, the per-user install script.

The PyInstaller build itself takes minutes, so it runs in `make console-bundle-check`
(build, unpack, start the binary offscreen with --screenshot), not here.
"""

from __future__ import annotations

import configparser
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "installer"))
import build_console_bundle as bundle  # noqa: E402

DESKTOP = REPO / "installer" / "musa-console.desktop"


def _entry(path: pathlib.Path) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # keys are case-sensitive
    cp.read_string(path.read_text())
    return cp["Desktop Entry"]


def test_desktop_entry_is_valid():
    e = _entry(DESKTOP)
    assert e["Type"] == "Application" and e["Name"] == "musa-console"
    assert e["Exec"].split()[0] == "musa-console" and e["Icon"] == "musa-console"
    assert e["Terminal"] == "false" and e["Categories"].endswith(";")
    if shutil.which("desktop-file-validate"):
        proc = subprocess.run(["desktop-file-validate", str(DESKTOP)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(60)
def test_icons_render_from_the_app_svg(tmp_path):
    bundle.render_icons(REPO / "app" / "resources" / "icons" / "app.svg", tmp_path)
    assert (tmp_path / "scalable/apps/musa-console.svg").is_file()
    for n in bundle.ICON_SIZES:
        png = tmp_path / f"{n}x{n}/apps/musa-console.png"
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (n, n)


@pytest.mark.timeout(60)
def test_install_script_adds_the_menu_entry_for_the_user(tmp_path):
    # A bundle folder as the tarball unpacks it, with a stand-in executable.
    root = tmp_path / "musa-console"
    (root / "share/applications").mkdir(parents=True)
    shutil.copy2(DESKTOP, root / "share/applications/musa-console.desktop")
    bundle.render_icons(REPO / "app" / "resources" / "icons" / "app.svg", root / "share/icons/hicolor")
    exe = root / "musa-console"
    exe.write_text("#!/bin/sh\necho console\n")
    exe.chmod(0o755)
    shutil.copy2(REPO / "installer/install-desktop-entry.sh", root / "install-desktop-entry.sh")
    home = tmp_path / "home"
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    proc = subprocess.run(["sh", str(root / "install-desktop-entry.sh")], capture_output=True, text=True,
                          env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    launcher = home / ".local/bin/musa-console"
    assert launcher.is_symlink() and subprocess.run([str(launcher)], capture_output=True, text=True).stdout == "console\n"
    entry = _entry(home / ".local/share/applications/musa-console.desktop")
    assert entry["Exec"] == f"{exe} %U" and entry["TryExec"] == str(exe)
    assert (home / ".local/share/icons/hicolor/256x256/apps/musa-console.png").is_file()


def test_bundle_excludes_torch_and_the_daemon():
    assert {"torch", "torch_musa", "musaops.daemon"} <= set(bundle.EXCLUDES)
    assert bundle.tarball_path(pathlib.Path("dist")).name.startswith(f"musa-console-{bundle.version()}-linux-")
