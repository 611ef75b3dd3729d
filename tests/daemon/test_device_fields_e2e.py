"""Every row of the device field table reaches the wire (Telemetry.Stream) and /metrics from
a real `musad serve` on the stub MTML and NVML libraries, so a name forgotten in the encoder,
the proto or the gauges fails here. A field counts as covered when at least one of the two
libraries reports it (MTML has no power limit, NVML no MPC)."""

from __future__ import annotations

import pathlib
import re
import sys

import grpc
import pytest

from musaops.daemon.devices import SAMPLE_FIELDS
from musaops.v1 import telemetry_pb2, telemetry_pb2_grpc

STUBS = pathlib.Path(__file__).resolve().parents[1] / "stubs"
sys.path.insert(0, str(STUBS))
from vendor_stubs import StubMusad, build_stub  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def _observe(stub: str, tmp: pathlib.Path) -> tuple[set[str], set[str], list]:
    folder = build_stub(stub, tmp / f"{stub}-lib")
    if folder is None:
        pytest.skip("gcc is not installed: cannot build the stub libraries")
    ecc = tmp / f"{stub}-ecc"
    ecc.write_text("1 2\n")  # board 1 reports two uncorrected ECC errors: healthy=false, a reason
    env = {"MTML_STUB_ECC_FILE": str(ecc), "NVML_STUB_ECC_FILE": str(ecc), "MTML_STUB_DEVICES": "2",
           "NVML_STUB_DEVICES": "2"}
    (tmp / stub).mkdir()
    daemon = StubMusad(folder, tmp / stub, **env)
    try:
        with grpc.insecure_channel(daemon.address) as ch:
            stream = telemetry_pb2_grpc.TelemetryStub(ch).Stream(telemetry_pb2.StreamRequest(interval_ms=100), timeout=60)
            snap = next(iter(stream))
            stream.cancel()
        wire = {f.name for d in snap.devices for f, _ in d.ListFields()}
        text = daemon.metrics()
    finally:
        daemon.stop()
    scraped = set(re.findall(r"^musad:(device_\w+)\{", text, re.M))
    return wire, scraped, list(snap.devices)


def test_every_device_field_reaches_the_wire_and_metrics(tmp_path) -> None:
    musa_wire, musa_metrics, musa_devices = _observe("mtml", tmp_path)
    cuda_wire, cuda_metrics, cuda_devices = _observe("nvml", tmp_path)
    for f in SAMPLE_FIELDS:
        assert f.name in musa_wire | cuda_wire, f"{f.name} never reaches Telemetry.Stream"
        if f.metric:
            assert f.metric in musa_metrics | cuda_metrics, f"{f.metric} is missing from /metrics"
    # What each library lacks stays unset, not zero.
    assert "power_limit_watts" not in musa_wire and "mpc_enabled" not in cuda_wire
    for devices in (musa_devices, cuda_devices):
        assert devices[0].healthy and not devices[0].HasField("health_reason")
        assert not devices[1].healthy and devices[1].ecc_errors_uncorrected == 2
        assert "2 uncorrected ECC errors" in devices[1].health_reason
    assert musa_devices[1].links_total == 4 and musa_devices[1].links_up == 3
    assert musa_devices[0].pcie_generation == 5 and musa_devices[0].pcie_width == 16
    assert musa_devices[0].ecc_enabled and not musa_devices[0].mpc_enabled
    assert cuda_devices[0].links_up == 18 and 0 < cuda_devices[0].fan_speed_percent <= 100
