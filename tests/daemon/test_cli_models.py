"""`musad import | pull | delete` as subprocesses against two real `musad serve` children on
port 0 (tokens required): upload with resume, node-to-node pull with the source's token,
delete, and one sentence with exit 1 or 2 for what the node refuses or bad usage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest

pytestmark = pytest.mark.timeout(240)
MUSAD = [sys.executable, "-m", "musaops.daemon.cli"]


def _musad(*args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("MUSAD_TOKEN", "MUSAD_ADDRESS", "MUSAD_SOURCE_TOKEN")}
    return subprocess.run([*MUSAD, *args], capture_output=True, text=True, timeout=timeout, env=env)


class Node:
    def __init__(self, tmp):
        state, self.models = tmp / "state", tmp / "models"
        self.models.mkdir(parents=True)
        self.token = tmp / "admin.token"
        r = _musad("token", "create", "--name", "ops", "--role", "admin", "--out", str(self.token),
                   "--state-dir", str(state))
        assert r.returncode == 0, r.stderr
        self.proc = subprocess.Popen(
            [*MUSAD, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--http-listen", "",
             "--device", "cpu", "--state-dir", str(state), "--models", str(self.models)],
            stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            m = re.search(r"serving on port (\d+)", line)
            if m:
                self.address = f"127.0.0.1:{m.group(1)}"
                break
        else:
            raise AssertionError(f"musad serve exited ({self.proc.wait()})")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def run(self, *args):
        return _musad(*args, "--address", self.address, "--token-file", str(self.token))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture
def nodes(tmp_path):
    a, b = Node(tmp_path / "a"), Node(tmp_path / "b")
    yield a, b
    a.stop()
    b.stop()


def test_import_pull_delete(nodes, tmp_path, demo_model_dir):
    a, b = nodes
    r = a.run("import", str(demo_model_dir), "--name", "mine")
    assert r.returncode == 0, r.stderr
    assert "mine is in the repository" in r.stdout
    for f in demo_model_dir.rglob("*"):
        if f.is_file():
            assert (a.models / "mine" / f.relative_to(demo_model_dir)).read_bytes() == f.read_bytes()
    r = a.run("import", str(demo_model_dir), "--name", "mine")
    assert r.returncode == 1 and "already holds" in r.stderr and "Traceback" not in r.stderr

    gguf = tmp_path / "x.gguf"   # any bytes: the repository lists what it cannot deploy with a reason
    gguf.write_bytes(b"GGUF" + bytes(1000))
    r = a.run("import", str(gguf), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stage"] == "TRANSFER_STAGE_DONE" and (a.models / "x.gguf").is_file()

    token = a.token.read_text().strip()
    r = b.run("pull", "--from", a.address, "--source-token", token, "mine")
    assert r.returncode == 0, r.stderr
    assert (b.models / "mine" / "config.json").read_bytes() == (a.models / "mine" / "config.json").read_bytes()
    r = b.run("pull", "--from", a.address, "--source-token", "wrong", "x.gguf")
    assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr and "Traceback" not in r.stderr

    r = b.run("delete", "mine")
    assert r.returncode == 0 and "freed" in r.stdout and not (b.models / "mine").exists()
    r = b.run("delete", "mine")
    assert r.returncode == 1 and "no model named" in r.stderr


def test_bad_paths_are_usage_errors(nodes, tmp_path):
    a, _ = nodes
    r = a.run("import", str(tmp_path / "absent"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "notes.txt").write_text("x")
    r = a.run("import", str(tmp_path / "notes.txt"))
    assert r.returncode == 2 and ".gguf" in r.stderr
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text("{}")
    r = a.run("import", str(tmp_path / "folder"), "--name", "../evil")
    assert r.returncode == 1 and "not allowed" in r.stderr and "Traceback" not in r.stderr
    assert not (a.models.parent / "evil").exists()
