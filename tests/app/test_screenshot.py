"""`musa-console --screenshot` renders the window offscreen against a real daemon and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PySide6.QtGui import QImage

pytestmark = pytest.mark.timeout(120)


def _console(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "musaops.app.cli", "--data-dir", str(tmp_path),
                           *args], env=env, capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("view", ["fleet", "node"])
def test_screenshot_of_a_view_against_a_real_daemon(view, daemon, tmp_path) -> None:
    out = tmp_path / f"{view}.png"
    r = _console("--screenshot", str(out), "--view", view, "--after", "2",
                 "--connect", daemon.address, "--size", "1280x800", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    img = QImage(str(out))
    assert (img.width(), img.height()) == (1280, 800)
    # Not a blank canvas: many distinct colours were painted.
    colours = {img.pixel(x, y) for x in range(0, 1280, 16) for y in range(0, 800, 16)}
    assert len(colours) > 10


def test_bad_connect_argument_is_a_sentence_not_a_traceback(tmp_path) -> None:
    r = _console("--screenshot", str(tmp_path / "x.png"), "--connect", "no-port", tmp_path=tmp_path)
    assert r.returncode != 0
    assert "expected HOST:PORT" in r.stderr and "Traceback" not in r.stderr
