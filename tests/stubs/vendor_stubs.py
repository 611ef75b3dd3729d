"""Compile the stub vendor libraries (tests/stubs/*.c) with gcc into a scratch folder.

The stubs stand in for libmtml.so / libnvidia-ml.so.1 on machines without the hardware;
they are the lowest-level fake the tests allow. dlopen() reads LD_LIBRARY_PATH only at
process start, so a test runs the code under test in a subprocess whose environment comes
from `stub_env(folder)`.

    from vendor_stubs import build_stub, stub_env   # tests/stubs on sys.path
    folder = build_stub("mtml", tmp_path)    # None when gcc is missing
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

HERE = pathlib.Path(__file__).resolve().parent

# stub name -> (C source, file gcc writes, soname, extra names the loaders try)
STUBS = {
    "mtml": ("mtml_stub.c", "libmtml.so", "libmtml.so.2", ("libmtml.so.2",)),
    "nvml": ("nvml_stub.c", "libnvidia-ml.so", "libnvidia-ml.so.1", ("libnvidia-ml.so.1",)),
}


def gcc() -> str | None:
    return shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")


def build_stub(name: str, folder: pathlib.Path) -> pathlib.Path | None:
    """Compile stub `name` into `folder` (created) and return it; None without a compiler."""
    compiler = gcc()
    if compiler is None:
        return None
    source, out, soname, links = STUBS[name]
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", f"-Wl,-soname,{soname}",
         "-o", str(folder / out), str(HERE / source), "-lm"],
        check=True, capture_output=True, text=True,
    )
    for link in links:
        target = folder / link
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(out)
    return folder


def stub_env(folder: pathlib.Path, **extra: str) -> dict[str, str]:
    """os.environ with `folder` first on LD_LIBRARY_PATH, plus `extra` variables."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(folder), env.get("LD_LIBRARY_PATH", "")) if p
    )
    env.update(extra)
    return env


class StubMusad:
    """A real `musad serve` subprocess on a stub vendor library (LD_LIBRARY_PATH = `folder`),
    auth off, gRPC and /metrics on free ports. `stop()` ends it with SIGTERM and checks exit 0."""

    def __init__(self, folder: pathlib.Path, tmp: pathlib.Path, models: pathlib.Path | None = None,
                 **env: str) -> None:
        import re
        import sys
        import threading

        # no HTTP front door: port 8000 may be taken
        (tmp / "musad.toml").write_text("[auth]\nrequired = false\n[server]\ngrace_seconds = 5\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "musaops.daemon.cli", "serve", "--config", str(tmp / "musad.toml"),
             "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--http-listen", "", "--state-dir", str(tmp / "state"),
             "--models", str(models or tmp / "models")],
            stderr=subprocess.PIPE, text=True, env=stub_env(folder, **env))
        self.lines: list[str] = []
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"listening on .* \(port (\d+)\); metrics on port (\d+)", line)
            if m:
                self.port, self.metrics_port = int(m[1]), int(m[2])
                break
        else:
            self.proc.wait(30)
            raise RuntimeError("musad did not start:\n" + "".join(self.lines))
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metrics(self) -> str:
        import urllib.request
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30).read().decode()

    def stop(self) -> None:
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self._reader.join(5)
        assert code == 0, "".join(self.lines)
