"""The CUDA back end against a stub libnvidia-ml.so.1 (four H100-like boards, 80 GiB each).

Like test_devices_mtml.py: the stub (tests/stubs/nvml_stub.c) is compiled with gcc and
pynvml dlopens it in a subprocess started with LD_LIBRARY_PATH pointing at it.
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
def nvml_dir(tmp_path_factory) -> pathlib.Path:
    folder = build_stub("nvml", tmp_path_factory.mktemp("nvml-stub"))
    if folder is None:
        pytest.skip("gcc is not installed: cannot build the stub libnvidia-ml.so.1")
    return folder


def probe(nvml_dir, preference="auto", max_samples=200, **env) -> dict:
    env.setdefault("CUDA_VISIBLE_DEVICES", None)
    env.setdefault("CUDA_DEVICE_ORDER", None)
    environ = stub_env(nvml_dir, **{k: v for k, v in env.items() if v is not None})
    for k, v in env.items():
        if v is None:
            environ.pop(k, None)
    proc = subprocess.run(
        [sys.executable, str(STUBS / "probe_devices.py"), preference, str(max_samples)],
        env=environ, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(90)
def test_auto_detects_the_nvidia_boards_with_every_nvml_field(nvml_dir):
    out = probe(nvml_dir)
    assert out["backend"] == "cuda" and out["torch_device_type"] == "cuda"
    info = out["info"]
    assert [d["index"] for d in info] == [0, 1, 2, 3]
    assert {d["name"] for d in info} == {"NVIDIA H100 80GB HBM3"}
    assert {d["memory_total_bytes"] for d in info} == {80 * GIB}
    assert {d["capability"] for d in info} == {"9.0"}
    assert {d["driver_version"] for d in info} == {"550.54.15-stub"}
    assert info[1]["pci_bus_id"] == "00000000:38:00.0"
    assert out["torch_imported"] is False
    assert out["cuda_device_order"] == "PCI_BUS_ID"  # torch will number GPUs as NVML does
    samples = out["samples"]
    assert len(samples) >= 2 and samples[0][0]["utilization_percent"] != samples[-1][0]["utilization_percent"]
    for s in samples[-1]:
        assert 0 < s["memory_used_bytes"] < 80 * GIB and 0 < out["free"][s["index"]] < 80 * GIB
        assert s["power_limit_watts"] == 700.0 and 70.0 <= s["power_watts"] <= 670.0
        assert s["memory_clock_mhz"] == 2619 and 345 <= s["sm_clock_mhz"] <= 1845
        assert 30.0 <= s["temperature_celsius"] <= 80.0
        assert s["memory_utilization_percent"] is not None
    assert "no cuda device with index 4" in out["bad_index"]
    assert out["after_close"] == []


@pytest.mark.timeout(90)
def test_cuda_visible_devices_selects_and_orders_the_boards(nvml_dir):
    out = probe(nvml_dir, "cuda", max_samples=1, CUDA_VISIBLE_DEVICES="3,GPU-0b5e0000-1111-2222-3333-000000000001")
    assert [d["uuid"][-1] for d in out["info"]] == ["3", "1"]
    assert [d["index"] for d in out["info"]] == [0, 1]
    hidden = probe(nvml_dir, "cuda", CUDA_VISIBLE_DEVICES="")
    assert hidden["error_type"] == "BackendUnavailableError"
    assert "CUDA_VISIBLE_DEVICES" in hidden["error"]


@pytest.mark.timeout(90)
def test_unsupported_nvml_fields_stay_unset(nvml_dir):
    out = probe(nvml_dir, max_samples=2,
                NVML_STUB_UNSUPPORTED="nvmlDeviceGetEnforcedPowerLimit,nvmlDeviceGetTemperature")
    for s in out["samples"][-1]:
        assert s["power_limit_watts"] is None and s["temperature_celsius"] is None
        assert s["power_watts"] is not None


@pytest.mark.timeout(90)
def test_mtml_wins_over_nvml_in_auto(nvml_dir, tmp_path):
    both = build_stub("mtml", build_stub("nvml", tmp_path))  # one folder holds both stubs
    assert probe(both, max_samples=1)["backend"] == "musa"
    assert probe(both, "cuda", max_samples=1)["backend"] == "cuda"
