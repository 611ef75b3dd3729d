"""Build the musa-ops wheel from a scratch copy of the source tree (shared by the builders).

Building in place would leave setuptools' build/ and egg-info folders in the shared tree,
and a stale build/lib can carry deleted modules into the next wheel. So the sources are
copied first (without .git, .venv, build outputs and caches) and built there, offline:
no build isolation, no index.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
_SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                               ".pytest_cache", "*.pyc", "tests", "installer")


class WheelError(Exception):
    """The wheel could not be built (the message holds pip's output)."""


def build_wheel(out: pathlib.Path, repo: pathlib.Path = REPO) -> pathlib.Path:
    """Build musa_ops-<version>-py3-none-any.whl into `out`; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="musa-ops-src-") as tmp:
        src = pathlib.Path(tmp) / "src"
        shutil.copytree(repo, src, ignore=_SKIP, symlinks=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
             "--quiet", "--wheel-dir", str(out), str(src)],
            capture_output=True, text=True,
        )
    if proc.returncode != 0:
        raise WheelError(f"building the musa-ops wheel failed:\n{proc.stdout}{proc.stderr}")
    wheels = sorted(out.glob("musa_ops-*.whl"))
    if not wheels:
        raise WheelError("pip wheel produced no musa_ops wheel")
    return wheels[-1]
