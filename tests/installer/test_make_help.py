"""`make help` names every target the Makefile declares (.PHONY), so none is a secret."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_target() -> None:
    text = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split()
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    listed = {line.split()[1] for line in out.splitlines() if line.startswith("make ")}
    assert set(phony) - {"help"} <= listed, f"not in make help: {sorted(set(phony) - {'help'} - listed)}"
