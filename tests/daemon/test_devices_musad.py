"""A real `musad serve` on eight stub MTT S5000 boards: what GetInfo, Telemetry and /metrics say.

The stub libmtml.so (tests/stubs/mtml_stub.c) is compiled with gcc; the daemon runs in a
subprocess with LD_LIBRARY_PATH pointing at it, so pymtml dlopens the stub exactly as it
would the vendor library. Skipped when gcc is missing.
"""

from __future__ import annotations

import pathlib
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import grpc
import pytest

from musaops.v1 import common_pb2, node_pb2, node_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

STUBS = pathlib.Path(__file__).resolve().parents[1] / "stubs"
sys.path.insert(0, str(STUBS))
from vendor_stubs import build_stub, stub_env  # noqa: E402

GIB = 1024**3
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def mtml_dir(tmp_path_factory) -> pathlib.Path:
    folder = build_stub("mtml", tmp_path_factory.mktemp("mtml-stub"))
    if folder is None:
        pytest.skip("gcc is not installed: cannot build the stub libmtml.so")
    return folder


def _musad(tmp_path, mtml_dir, *args, **env):
    (tmp_path / "musad.toml").write_text("[auth]\nrequired = false\n[server]\ngrace_seconds = 5\nhttp_listen = \"\"\n")
    return subprocess.Popen(
        [sys.executable, "-m", "musaops.daemon.cli", "serve", "--config", str(tmp_path / "musad.toml"),
         "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"),
         "--models", str(tmp_path / "models"), *args],
        stderr=subprocess.PIPE, text=True, env=stub_env(mtml_dir, **env),
    )


@pytest.fixture
def musad_on_stub(tmp_path, mtml_dir):
    proc = _musad(tmp_path, mtml_dir, "--metrics-listen", "127.0.0.1:0")
    lines: list[str] = []
    ports = None
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"listening on .* \(port (\d+)\); metrics on port (\d+)", line)
        if m:
            ports = int(m[1]), int(m[2])
            break
    if ports is None:
        proc.kill()
        pytest.fail("musad did not start:\n" + "".join(lines))
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    yield ports, lines
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, "".join(lines)
    reader.join(5)


def test_getinfo_telemetry_and_metrics_report_the_eight_boards(musad_on_stub):
    (port, metrics_port), lines = musad_on_stub
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        info = node_pb2_grpc.NodeStub(ch).GetInfo(node_pb2.GetInfoRequest(), timeout=30)
        assert info.backend == common_pb2.BACKEND_MUSA
        assert len(info.devices) == 8
        for i, d in enumerate(info.devices):
            assert d.index == i and d.name == "MTT S5000" and d.backend == common_pb2.BACKEND_MUSA
            assert d.memory_total_bytes == 80 * GIB
            assert d.driver_version == "3.1.0-stub" and d.uuid and d.pci_bus_id
        assert len({d.uuid for d in info.devices}) == 8

        stream = telemetry_pb2_grpc.TelemetryStub(ch).Stream(
            telemetry_pb2.StreamRequest(interval_ms=100), timeout=60)
        snaps = []
        for snap in stream:
            snaps.append(snap)
            if len(snaps) >= 2 and snap.devices[0].utilization_percent != snaps[0].devices[0].utilization_percent:
                break
            assert len(snaps) < 200, "utilisation never changed"
        stream.cancel()
    for snap in (snaps[0], snaps[-1]):
        assert [d.index for d in snap.devices] == list(range(8))
        for d in snap.devices:
            assert d.memory_total_bytes == 80 * GIB and 0 < d.memory_used_bytes < 80 * GIB
            assert d.HasField("utilization_percent") and d.HasField("temperature_celsius")
            assert d.HasField("power_watts") and d.HasField("sm_clock_mhz")
            # MTML has no power-limit query: unset on the wire, not 0.
            assert not d.HasField("power_limit_watts")

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read().decode()
    util = re.findall(r'^musad:device_utilization_percent\{device="(\d)",name="MTT S5000"\} (\S+)$', text, re.M)
    assert sorted(int(d) for d, _ in util) == list(range(8))
    total = re.search(r'^musad:device_memory_total_bytes\{device="7",name="MTT S5000"\} (\S+)$', text, re.M)
    assert total and float(total[1]) == 80 * GIB
    assert not re.search(r"^musad:device_power_limit_watts\{", text, re.M)
    assert "device detection: using musa (8 devices)" in "".join(lines)


def test_explicit_musa_without_boards_exits_2_with_the_reason(tmp_path, mtml_dir):
    proc = _musad(tmp_path, mtml_dir, "--metrics-listen", "", "--device", "musa", MTML_STUB_DEVICES="0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "MTML reports no devices" in err and "Traceback" not in err
