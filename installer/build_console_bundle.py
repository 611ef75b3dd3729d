#!/usr/bin/env python3
"""Build the musa-console desktop bundle: a PyInstaller one-folder app, .desktop entry, icons.

Operators' workstations need no Python: the tarball holds the interpreter, PySide6,
pyqtgraph, grpcio and the console code (never torch or the daemon: import-linter keeps the
console free of both, and the build excludes them so nothing drags them in).

    .venv/bin/python installer/build_console_bundle.py --out dist             # build + tarball
    .venv/bin/python installer/build_console_bundle.py --out dist --check-only
        # start the bundled binary offscreen with --screenshot; print a JSON report

Layout of dist/musa-console-<version>-linux-<arch>.tar.gz:
    musa-console/musa-console                 the executable
    musa-console/_internal/...                Python, Qt, the app's resources
    musa-console/share/applications/musa-console.desktop
    musa-console/share/icons/hicolor/{scalable,256x256,128x128,64x64}/apps/musa-console.*
    musa-console/install-desktop-entry.sh     menu entry for the current user
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from pkgwheel import WheelError, build_wheel  # noqa: E402

NAME = "musa-console"
ICON_SIZES = (64, 128, 256)
# Never in the bundle: the console must not import these (import-linter checks the code;
# this keeps optional imports of third-party packages from dragging them in).
EXCLUDES = ("torch", "torch_musa", "transformers", "musaops.daemon", "tkinter", "matplotlib",
            "IPython", "PyQt5", "PyQt6", "PySide2", "pytest", "grpc_tools", "numpy.f2py")


class BuildError(Exception):
    """A build problem, as a sentence."""


def version() -> str:
    return md.version("musa-ops")


def arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def tarball_path(out: pathlib.Path) -> pathlib.Path:
    return out / f"{NAME}-{version()}-linux-{arch()}.tar.gz"


def musa_ops_sources(work: pathlib.Path) -> pathlib.Path:
    """musa-ops unpacked from a freshly built wheel: PyInstaller cannot follow the editable
    install's folder mapping (app/ -> musaops.app), a plain site folder it can."""
    try:
        wheel = build_wheel(work / "wheel")
    except WheelError as exc:
        raise BuildError(str(exc)) from None
    site = work / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    shutil.rmtree(site / "musaops" / "daemon", ignore_errors=True)  # never in the console
    return site


def run_pyinstaller(work: pathlib.Path) -> pathlib.Path:
    """One-folder build into work/dist/musa-console; returns that folder."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise BuildError("PyInstaller is not installed: .venv/bin/pip install -e '.[bundle]'") from None
    site = musa_ops_sources(work)
    entry = work / "musa_console_entry.py"
    entry.write_text("import sys\nfrom musaops.app.cli import main\nsys.exit(main())\n")
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--onedir",
           "--name", NAME, "--distpath", str(work / "dist"), "--workpath", str(work / "build"),
           "--specpath", str(work), "--log-level", "WARN", "--paths", str(site),
           "--collect-data", "musaops.app", "--copy-metadata", "musa-ops",
           "--collect-submodules", "musaops.app", "--collect-submodules", "musaops.v1"]
    for module in EXCLUDES:
        cmd += ["--exclude-module", module]
    cmd.append(str(entry))
    env = dict(os.environ, PYTHONPATH=str(site))  # for PyInstaller's hook subprocesses too
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
    if proc.returncode != 0:
        raise BuildError(f"PyInstaller failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    bundle = work / "dist" / NAME
    if not (bundle / NAME).is_file():
        raise BuildError(f"PyInstaller produced no {NAME} executable")
    return bundle


def render_icons(svg: pathlib.Path, dest: pathlib.Path) -> None:
    """hicolor icons: the SVG plus PNGs rendered from it (Qt, offscreen)."""
    scalable = dest / "scalable" / "apps"
    scalable.mkdir(parents=True, exist_ok=True)
    shutil.copy2(svg, scalable / f"{NAME}.svg")
    code = (
        "import sys, os\n"
        "os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "from PySide6.QtGui import QGuiApplication, QImage, QPainter\n"
        "from PySide6.QtCore import Qt\n"
        "from PySide6.QtSvg import QSvgRenderer\n"
        "app = QGuiApplication([])\n"
        "r = QSvgRenderer(sys.argv[1])\n"
        "assert r.isValid(), 'invalid SVG'\n"
        "for arg in sys.argv[3:]:\n"
        "    n = int(arg)\n"
        "    img = QImage(n, n, QImage.Format.Format_ARGB32)\n"
        "    img.fill(Qt.GlobalColor.transparent)\n"
        "    p = QPainter(img); r.render(p); p.end()\n"
        "    d = os.path.join(sys.argv[2], f'{n}x{n}', 'apps'); os.makedirs(d, exist_ok=True)\n"
        "    assert img.save(os.path.join(d, 'musa-console.png'))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(svg), str(dest), *map(str, ICON_SIZES)],
                   check=True, capture_output=True, text=True)


def add_desktop_files(bundle: pathlib.Path) -> None:
    share = bundle / "share"
    apps = share / "applications"
    apps.mkdir(parents=True, exist_ok=True)
    shutil.copy2(HERE / "musa-console.desktop", apps / f"{NAME}.desktop")
    render_icons(REPO / "app" / "resources" / "icons" / "app.svg", share / "icons" / "hicolor")
    script = bundle / "install-desktop-entry.sh"
    shutil.copy2(HERE / "install-desktop-entry.sh", script)
    script.chmod(0o755)


def build(out: pathlib.Path) -> pathlib.Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="musa-console-bundle-") as tmp:
        bundle = run_pyinstaller(pathlib.Path(tmp))
        add_desktop_files(bundle)
        tarball = tarball_path(out)
        with tarfile.open(tarball, "w:gz", compresslevel=6) as tf:
            tf.add(bundle, arcname=NAME)
    return tarball


def folder_bytes(path: pathlib.Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*"))


def check(out: pathlib.Path, timeout: float = 120.0) -> dict:
    """Unpack the tarball, start the bundled binary offscreen with --screenshot; a report."""
    tarball = tarball_path(out)
    if not tarball.is_file():
        raise BuildError(f"{tarball} does not exist: run `make console-bundle` first")
    with tempfile.TemporaryDirectory(prefix="musa-console-check-") as tmp:
        tmp_path = pathlib.Path(tmp)
        with tarfile.open(tarball) as tf:
            tf.extractall(tmp_path, filter="tar") if hasattr(tarfile, "data_filter") else tf.extractall(tmp_path)
        bundle = tmp_path / NAME
        names = [p.relative_to(bundle).as_posix() for p in bundle.rglob("*")]
        leaked = sorted({n.split("/")[1] for n in names
                         if n.startswith("_internal/") and n.split("/")[1].split(".")[0] in ("torch", "torch_musa", "transformers")})
        if any("/musaops/daemon/" in f"/{n}" for n in names):
            leaked.append("musaops.daemon")
        for required in ("share/applications/musa-console.desktop",
                         "share/icons/hicolor/scalable/apps/musa-console.svg",
                         "share/icons/hicolor/256x256/apps/musa-console.png"):
            if required not in names:
                raise BuildError(f"the bundle lacks {required}")
        shot = tmp_path / "screenshot.png"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(QT_QPA_PLATFORM="offscreen", MUSA_CONSOLE_DATA_DIR=str(tmp_path / "data"),
                   HOME=str(tmp_path / "home"))
        t0 = time.monotonic()
        proc = subprocess.run(
            [str(bundle / NAME), "--screenshot", str(shot), "--after", "0.5", "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path,
        )
        startup = time.monotonic() - t0
        png_ok = shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        report = {
            "tarball": tarball.name,
            "tarball_bytes": tarball.stat().st_size,
            "bundle_bytes": folder_bytes(bundle),
            "files": len(names),
            "exit_code": proc.returncode,
            "screenshot_bytes": shot.stat().st_size if shot.is_file() else 0,
            "screenshot_ok": png_ok,
            "run_seconds": round(startup, 2),
            "leaked": leaked,
        }
        if proc.returncode != 0 or not png_ok or leaked:
            report["stderr_tail"] = proc.stderr[-3000:]
        return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build (or check) the musa-console desktop bundle.")
    p.add_argument("--out", default="dist", help="folder for the tarball (default dist)")
    p.add_argument("--check-only", action="store_true",
                   help="do not build: unpack the tarball, run it offscreen with --screenshot")
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    try:
        if args.check_only:
            report = check(out)
            print(json.dumps(report))
            ok = report["exit_code"] == 0 and report["screenshot_ok"] and not report["leaked"]
            return 0 if ok else 1
        t0 = time.monotonic()
        tarball = build(out)
        print(json.dumps({"tarball": str(tarball), "tarball_bytes": tarball.stat().st_size,
                          "build_seconds": round(time.monotonic() - t0, 1)}))
        return 0
    except BuildError as exc:
        print(f"build_console_bundle: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
