"""The engine's API module and package import without torch (the daemon's seam)."""

from __future__ import annotations

import subprocess
import sys


def test_engine_api_and_inference_service_do_not_import_torch():
    code = ("import sys, musaops.daemon.engine, musaops.daemon.engine.api, musaops.daemon.services.inference;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
