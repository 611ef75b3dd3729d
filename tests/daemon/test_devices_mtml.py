"""The MUSA back end against a stub libmtml.so: eight MTT S5000 boards with 80 GiB each.

The stub (tests/stubs/mtml_stub.c) is compiled with gcc per test session; pymtml dlopens it
in a subprocess started with LD_LIBRARY_PATH pointing at it. Skipped when gcc is missing.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

STUBS = pathlib.Path(__file__).resolve().parents[1] / "stubs"
sys.path.insert(0, str(STUBS))
from vendor_stubs import build_stub, stub_env  # noqa: E402

GIB = 1024**3


@pytest.fixture(scope="module")
def mtml_dir(tmp_path_factory) -> pathlib.Path:
    folder = build_stub("mtml", tmp_path_factory.mktemp("mtml-stub"))
    if folder is None:
        pytest.skip("gcc is not installed: cannot build the stub libmtml.so")
    return folder


def probe(mtml_dir, preference="auto", max_samples=200, **env) -> dict:
    environ = stub_env(mtml_dir, **env)
    if "MUSA_VISIBLE_DEVICES" not in env:
        environ.pop("MUSA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, str(STUBS / "probe_devices.py"), preference, str(max_samples)],
        env=environ, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(90)
def test_auto_detects_eight_s5000_boards_without_importing_torch(mtml_dir):
    out = probe(mtml_dir)
    assert out["backend"] == "musa" and out["torch_device_type"] == "musa"
    info = out["info"]
    assert [d["index"] for d in info] == list(range(8))
    assert {d["name"] for d in info} == {"MTT S5000"}
    assert {d["memory_total_bytes"] for d in info} == {80 * GIB}
    assert {d["backend"] for d in info} == {"musa"}
    assert len({d["uuid"] for d in info}) == 8 and all(d["uuid"] for d in info)
    assert len({d["pci_bus_id"] for d in info}) == 8 and info[0]["pci_bus_id"] == "0000:1b:00.0"
    assert {d["driver_version"] for d in info} == {"3.1.0-stub"}
    assert {d["capability"] for d in info} == {""}  # MTML has none; torch_musa not loaded
    assert out["torch_imported"] is False
    assert out["after_close"] == []


@pytest.mark.timeout(90)
def test_samples_carry_every_mtml_field_and_change_over_time(mtml_dir):
    out = probe(mtml_dir)
    samples = out["samples"]
    assert len(samples) >= 2, "utilisation never changed between samples"
    first, last = samples[0], samples[-1]
    assert first[0]["utilization_percent"] != last[0]["utilization_percent"]
    for batch in (first, last):
        assert [s["index"] for s in batch] == list(range(8))
        for s in batch:
            assert s["memory_total_bytes"] == 80 * GIB
            assert 0.10 * 80 * GIB <= s["memory_used_bytes"] <= 0.70 * 80 * GIB + 4096
            assert 0.0 <= s["utilization_percent"] <= 100.0
            assert 0.0 <= s["memory_utilization_percent"] <= 50.0
            assert 38.0 <= s["temperature_celsius"] <= 78.0
            # mW from MTML -> W: 120 W idle .. 470 W at 100 %
            assert 120.0 <= s["power_watts"] <= 470.0
            assert 1000 <= s["sm_clock_mhz"] <= 2000 and s["memory_clock_mhz"] == 1600
            # MTML has no power-limit query: reported as absent, not invented.
            assert s["power_limit_watts"] is None
    # Boards are out of phase: not all eight report the same utilisation.
    assert len({s["utilization_percent"] for s in first}) > 1
    # Free memory is total minus used, per board.
    assert all(0 < f < 80 * GIB for f in out["free"])
    assert "no musa device with index 8" in out["bad_index"]


@pytest.mark.timeout(90)
def test_fields_the_board_does_not_support_stay_unset(mtml_dir):
    out = probe(
        mtml_dir, max_samples=3,
        MTML_STUB_UNSUPPORTED="mtmlDeviceGetPowerUsage,mtmlMemoryGetUtilization,mtmlSystemGetDriverVersion",
    )
    assert out["backend"] == "musa"
    assert {d["driver_version"] for d in out["info"]} == {""}
    for batch in out["samples"]:
        for s in batch:
            assert s["power_watts"] is None and s["memory_utilization_percent"] is None
            assert s["utilization_percent"] is not None and s["memory_used_bytes"] is not None


@pytest.mark.timeout(90)
def test_no_boards_falls_back_to_cpu_and_explicit_musa_says_why(mtml_dir):
    auto = probe(mtml_dir, max_samples=1, MTML_STUB_DEVICES="0")
    assert auto["backend"] == "cpu" and len(auto["info"]) == 1
    explicit = probe(mtml_dir, "musa", MTML_STUB_DEVICES="0")
    assert explicit["error_type"] == "BackendUnavailableError"
    assert "MTML reports no devices" in explicit["error"]


@pytest.mark.timeout(90)
def test_explicit_cpu_ignores_the_gpus(mtml_dir):
    out = probe(mtml_dir, "cpu", max_samples=1)
    assert out["backend"] == "cpu" and out["info"][0]["backend"] == "cpu"


@pytest.mark.timeout(90)
def test_musa_visible_devices_selects_and_orders_the_boards(mtml_dir):
    out = probe(mtml_dir, "musa", max_samples=1, MUSA_VISIBLE_DEVICES="6,2")
    assert [d["uuid"][-1] for d in out["info"]] == ["6", "2"]
    assert [d["index"] for d in out["info"]] == [0, 1]
    assert [d["pci_bus_id"] for d in out["info"]] == ["0000:7b:00.0", "0000:3b:00.0"]
    assert len(out["samples"][0]) == 2
    hidden = probe(mtml_dir, "musa", MUSA_VISIBLE_DEVICES="")
    assert hidden["error_type"] == "BackendUnavailableError" and "hides all 8 devices" in hidden["error"]
    # auto falls back to the CPU when every board is hidden
    assert probe(mtml_dir, max_samples=1, MUSA_VISIBLE_DEVICES="")["backend"] == "cpu"
