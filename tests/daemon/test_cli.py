"""`musad` as a subprocess: --version, serve (SIGTERM drains and exits 0), exit code 2 for
config errors and a port in use, and demo-model."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from musaops.daemon.repository import ModelRepository
from musaops.v1 import telemetry_pb2, telemetry_pb2_grpc

pytestmark = pytest.mark.timeout(120)
MUSAD = [sys.executable, "-m", "musaops.daemon.cli"]


def _run(*args, **kw):
    return subprocess.run([*MUSAD, *args], capture_output=True, text=True, timeout=60, **kw)


class Serve:
    """`musad serve` in a subprocess; reads its log until it says which port it bound."""

    def __init__(self, tmp_path, *extra):
        (tmp_path / "musad.toml").write_text("[auth]\nrequired = false\n[server]\ngrace_seconds = 20\n")
        self.proc = subprocess.Popen(
            [*MUSAD, "serve", "--config", str(tmp_path / "musad.toml"), "--listen", "127.0.0.1:0",
             "--metrics-listen", "", "--http-listen", "", "--device", "cpu", "--state-dir", str(tmp_path / "state"),
             "--models", str(tmp_path / "models"), *extra],
            stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.port = None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"listening on .* \(port (\d+)\)", line)
            if m:
                self.port = int(m.group(1))
                break
        assert self.port, "".join(self.lines)
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def wait(self) -> int:
        rc = self.proc.wait(timeout=60)
        self._reader.join(5)
        return rc


def test_version():
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.startswith("musad ")


def test_sigterm_ends_streams_drains_and_exits_0(tmp_path):
    srv = Serve(tmp_path)
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        stream = telemetry_pb2_grpc.TelemetryStub(ch).Stream(telemetry_pb2.StreamRequest(interval_ms=100))
        first = next(stream)
        assert first.host.memory_total_bytes > 0
        srv.proc.send_signal(signal.SIGTERM)
        rest = list(stream)  # the infinite stream ends cleanly (status OK) instead of hanging
        assert stream.code() == grpc.StatusCode.OK
        assert all(not s.backfill for s in rest)
    assert srv.wait() == 0
    log = "".join(srv.lines)
    assert "draining" in log and "musad stopped" in log
    # one structured line per record
    assert all(line.startswith("time=") for line in srv.lines if line.strip())


def test_sigint_also_exits_0(tmp_path):
    srv = Serve(tmp_path)
    srv.proc.send_signal(signal.SIGINT)
    assert srv.wait() == 0


def test_port_in_use_exits_2_with_a_sentence(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = _run("serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "", "--http-listen", "", "--device", "cpu",
                   "--state-dir", str(tmp_path / "state"))
    assert out.returncode == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_metrics_port_in_use_exits_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = _run("serve", "--listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{port}", "--http-listen", "",
                   "--device", "cpu", "--state-dir", str(tmp_path / "state"))
    assert out.returncode == 2
    assert "Cannot serve /metrics" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("toml, words", [
    ("[server]\nlisten = 5\n", "server.listen: expected str"),
    ("[server]\nlistne = '1:2'\n", "server.listne: unknown key"),
    ("[engine]\nmax_models = 0\n", "engine.max_models: must be greater than 0"),
    ("[models]\ndevice = 'tpu'\n", "models.device: must be one of"),
    ("[nope]\n", "nope: unknown section"),
    ("[server\n", "is not valid TOML"),
])
def test_config_errors_exit_2_naming_the_key(tmp_path, toml, words):
    (tmp_path / "bad.toml").write_text(toml)
    out = _run("serve", "--config", str(tmp_path / "bad.toml"))
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr


def test_bad_flag_value_exits_2(tmp_path):
    out = _run("serve", "--listen", "nowhere", "--state-dir", str(tmp_path))
    assert out.returncode == 2 and "server.listen" in out.stderr


def test_demo_model_command_writes_an_available_model(tmp_path):
    out = _run("demo-model", str(tmp_path / "repo" / "demo"))
    assert out.returncode == 0, out.stderr
    (entry,) = ModelRepository(tmp_path / "repo").scan()
    assert entry.name == "demo" and entry.ok and entry.architecture == "LlamaForCausalLM"


def test_no_command_prints_help_and_exits_2():
    out = _run()
    assert out.returncode == 2 and "serve" in out.stderr



def test_unusable_state_folder_exits_2(tmp_path):
    (tmp_path / "a-file").write_text("x")
    out = _run("serve", "--state-dir", str(tmp_path / "a-file" / "state"), "--device", "cpu",
               "--listen", "127.0.0.1:0", "--metrics-listen", "", "--http-listen", "")
    assert out.returncode == 2 and "Cannot create the state folder" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("backend", ["musa", "cuda"])
def test_absent_backend_exits_2_with_a_sentence(tmp_path, backend):
    from musaops.daemon.devices import DeviceError, detect

    try:
        detect(backend).close()
    except DeviceError:
        pass
    else:
        pytest.skip(f"this machine has a {backend} device")
    out = _run("serve", "--device", backend, "--state-dir", str(tmp_path), "--listen", "127.0.0.1:0",
               "--metrics-listen", "", "--http-listen", "")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("musad: ") and backend.upper() in out.stderr.upper()
