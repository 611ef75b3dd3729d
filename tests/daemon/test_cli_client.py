"""The shell client (`musad status | models | deploy | undeploy | generate | chat`) against a
real `musad serve` subprocess on port 0 with tokens required, each command run as a
subprocess: exit codes, output, and one sentence (never a traceback) on failure."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading

import pytest

from musaops.daemon.client.render import Progress

pytestmark = pytest.mark.timeout(240)
MUSAD = [sys.executable, "-m", "musaops.daemon.cli"]


def _musad(*args, env=None, stdin=None, timeout=120):
    full_env = {k: v for k, v in os.environ.items() if k not in ("MUSAD_TOKEN", "MUSAD_ADDRESS")}
    full_env.update(env or {})
    return subprocess.run([*MUSAD, *args], capture_output=True, text=True, timeout=timeout,
                          input=stdin, env=full_env)


class Node:
    """`musad serve` (tokens required) with the demo model; an admin and a viewer token."""

    def __init__(self, tmp):
        self.tmp = tmp
        state = tmp / "state"
        assert _musad("demo-model", str(tmp / "models" / "demo")).returncode == 0
        self.admin = tmp / "admin.token"
        self.viewer = tmp / "viewer.token"
        for name, role, out in (("ops", "admin", self.admin), ("watcher", "viewer", self.viewer)):
            r = _musad("token", "create", "--name", name, "--role", role, "--out", str(out),
                       "--state-dir", str(state))
            assert r.returncode == 0, r.stderr
        self.proc = subprocess.Popen(
            [*MUSAD, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--http-listen", "",
             "--device", "cpu", "--state-dir", str(state), "--models", str(tmp / "models")],
            stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"listening on .* \(port (\d+)\)", line)
            if m:
                self.address = f"127.0.0.1:{m.group(1)}"
                break
        else:
            raise AssertionError("".join(self.lines))
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()

    def run(self, *args, token=None, **kw):
        token = self.admin if token is None else token
        extra = ["--token-file", str(token)] if token else []
        return _musad(*args, "--address", self.address, *extra, **kw)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("client"))
    yield n
    n.stop()


def _one_sentence(r, *words):
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    err = r.stderr.strip()
    assert err.startswith("musad: ") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err


def test_status_and_models_as_tables_and_json(node):
    r = node.run("status")
    assert r.returncode == 0, r.stderr
    assert "backend   CPU" in r.stdout and "tokens required" in r.stdout and "DEVICE" in r.stdout
    r = node.run("status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["authRequired"] is True
    r = node.run("models")
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()[:2]
    assert header.split()[:2] == ["MODEL", "STATE"] and row.split()[:3] == ["demo", "available", "LlamaForCausalLM"]
    models = json.loads(node.run("models", "--json").stdout)["models"]
    assert [m["name"] for m in models] == ["demo"] and models[0]["state"] == "MODEL_STATE_AVAILABLE"


def test_token_from_the_environment_and_refusals(node):
    r = node.run("models", "--json", token="", env={"MUSAD_TOKEN": node.viewer.read_text().strip()})
    assert r.returncode == 0, r.stderr
    _one_sentence(node.run("models", token=""), "requires a token", "--token-file")
    bad = node.tmp / "bad.token"
    bad.write_text("musa_notarealtoken\n")
    _one_sentence(node.run("models", token=bad), "rejected the token")
    # a viewer may look but not deploy
    _one_sentence(node.run("deploy", "demo", token=node.viewer), "permission denied")
    _one_sentence(node.run("models", token=node.tmp / "absent.token"), "cannot read the token file")
    assert node.run("models", token=node.tmp / "absent.token").returncode == 2


def test_deploy_generate_chat_undeploy(node):
    _one_sentence(node.run("deploy", "no-such-model"), "no-such-model")
    r = node.run("deploy", "demo", "--device", "0", "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    assert "demo is ready on device 0 as float32" in r.stdout
    # not a terminal: plain progress lines, no carriage returns
    assert "demo: loading weights" in r.stderr and "\r" not in r.stderr and "Traceback" not in r.stderr
    r = node.run("models", "--json")
    (m,) = json.loads(r.stdout)["models"]
    assert m["state"] == "MODEL_STATE_READY" and m["deployment"]["dtype"] == "float32"

    r = node.run("generate", "demo", "Hello", "--max-tokens", "5", "--seed", "1", "--stats")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n") and "5 new tokens" in r.stderr
    # seeded: sampled from the random demo model, an unseeded run can end early at end-of-text
    r = node.run("generate", "demo", "-", "--max-tokens", "4", "--seed", "1", "--json", stdin="Hello from stdin")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["finishReason"] == "FINISH_REASON_LENGTH"
    assert out["usage"]["completionTokens"] == 4 and isinstance(out["text"], str)
    # two turns, then end of input
    r = node.run("chat", "demo", "--max-tokens", "3", "--system", "be brief", stdin="hi\nand again\n")
    assert r.returncode == 0, r.stderr
    _one_sentence(node.run("generate", "demo", "x", "--temperature", "1e-30"), "INVALID_ARGUMENT")

    r = node.run("undeploy", "demo", "--cancel", "--json")
    assert r.returncode == 0 and int(json.loads(r.stdout)["freedBytes"]) > 0
    _one_sentence(node.run("generate", "demo", "Hello"), "not deployed")
    _one_sentence(node.run("undeploy", "demo"), "demo")


def test_unreachable_and_bad_connection_options(node, tmp_path):
    r = _musad("models", "--address", "127.0.0.1:1")
    _one_sentence(r, "nothing answers at 127.0.0.1:1")
    assert r.returncode == 1
    r = _musad("status", "--address", "nowhere")
    _one_sentence(r, "--address")
    assert r.returncode == 2
    r = _musad("status", "--address", node.address, "--tls-cert", str(tmp_path / "c.pem"))
    _one_sentence(r, "--tls-cert and --tls-key")
    assert r.returncode == 2
    # TLS against a plaintext node: a sentence about the handshake, not grpc's log lines
    assert _musad("certs", "init", str(tmp_path / "pki"), "--host", "localhost").returncode == 0
    r = node.run("status", "--tls-ca", str(tmp_path / "pki" / "ca.pem"))
    _one_sentence(r, "TLS handshake")
    assert "E1" not in r.stderr and "GRPC_VERBOSITY" not in r.stderr


def test_progress_bar_on_a_terminal_is_redrawn_in_place():
    out = io.StringIO()
    bar = Progress("demo", out=out, tty=True)
    bar.update("loading weights", 0.5, "1 MiB / 2 MiB")
    bar.update("loading weights", 1.0)
    bar.end()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[" + "#" * 5 in text and " 50% loading weights 1 MiB / 2 MiB" in text and "100%" in text
    plain = io.StringIO()
    p = Progress("demo", out=plain, tty=False)
    for i in range(101):
        p.update("loading weights", i / 100)
    assert len(plain.getvalue().splitlines()) == 11 and "\r" not in plain.getvalue()
