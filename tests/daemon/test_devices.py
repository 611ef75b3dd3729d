"""Device detection and the CPU back end, in process, on whatever machine runs the tests."""

from __future__ import annotations

import ctypes.util
import dataclasses

import psutil
import pytest

from musaops.daemon.devices import (
    Accelerator,
    BackendUnavailableError,
    DeviceError,
    DeviceInfo,
    DeviceSample,
    UnknownDeviceError,
    detect,
)
from musaops.daemon.devices._fields import FieldReader
from musaops.daemon.devices.cpu import CpuAccelerator, cpu_model_name
from musaops.daemon.devices.base import visible_indices
from musaops.v1 import common_pb2


def test_dataclasses_match_the_proto_fields():
    assert [f.name for f in dataclasses.fields(DeviceInfo)] == [
        f.name for f in common_pb2.DeviceInfo.DESCRIPTOR.fields
    ]
    assert [f.name for f in dataclasses.fields(DeviceSample)] == [
        f.name for f in common_pb2.DeviceSample.DESCRIPTOR.fields
    ]
    # Frozen: safe to hand across threads.
    with pytest.raises(dataclasses.FrozenInstanceError):
        DeviceSample(index=0).index = 1  # type: ignore[misc]


def test_cpu_backend_reports_the_host():
    acc = detect("cpu")
    try:
        assert isinstance(acc, Accelerator)
        assert acc.backend == "cpu" and acc.torch_device_type == "cpu"
        (info,) = acc.info()
        assert info.index == 0 and info.backend == "cpu" and info.name
        assert info.memory_total_bytes == psutil.virtual_memory().total
        assert info.uuid == "" and info.pci_bus_id == ""
        (s,) = acc.sample()
        assert s.index == 0 and s.memory_total_bytes == info.memory_total_bytes
        assert 0 < s.memory_used_bytes < s.memory_total_bytes
        assert s.utilization_percent is None or 0.0 <= s.utilization_percent <= 100.0
        # Nothing portable reports these for a CPU: absent, not zero.
        assert s.power_watts is None and s.power_limit_watts is None
        assert s.sm_clock_mhz is None and s.memory_clock_mhz is None
        assert s.memory_utilization_percent is None
        assert 0 < acc.memory_free_bytes(0) <= info.memory_total_bytes
        with pytest.raises(UnknownDeviceError, match="index 1"):
            acc.memory_free_bytes(1)
    finally:
        acc.close()
        acc.close()  # idempotent


@pytest.mark.timeout(30)
def test_cpu_utilisation_is_this_objects_own_delta():
    acc = CpuAccelerator()
    # Another psutil user resetting the process-wide cpu_percent baseline must not matter.
    psutil.cpu_percent(interval=None)
    start = psutil.cpu_times()
    while psutil.cpu_times().user + psutil.cpu_times().system <= start.user + start.system:
        sum(i * i for i in range(20_000))  # busy until the kernel has counted a tick
    (s,) = acc.sample()
    assert s.utilization_percent is not None and s.utilization_percent > 0.0


def test_cpu_model_name_from_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6430\n")
    assert cpu_model_name(str(f)) == "Intel(R) Xeon(R) Gold 6430"
    assert cpu_model_name(str(tmp_path / "missing"))  # falls back to something non-empty


@pytest.mark.parametrize("preference", ["gpu", "nvidia", "", "MUSA "])
def test_detect_validates_the_preference(preference):
    if preference.strip().lower() == "musa":
        # Case and spaces are forgiven; on a machine without MTML that is "unavailable".
        if ctypes.util.find_library("mtml"):
            pytest.skip("this machine has a real libmtml")
        with pytest.raises(BackendUnavailableError):
            detect(preference)
    elif preference == "":
        acc = detect(preference)  # empty means auto
        assert acc.backend in ("musa", "cuda", "cpu")
        acc.close()
    else:
        with pytest.raises(DeviceError, match="choose one of auto, musa, cuda, cpu"):
            detect(preference)


def test_explicit_backend_absent_raises_a_sentence():
    if ctypes.util.find_library("mtml"):
        pytest.skip("this machine has a real libmtml")
    with pytest.raises(BackendUnavailableError, match="libmtml.so could not be loaded"):
        detect("musa")
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has a real NVML")
    with pytest.raises(BackendUnavailableError, match="NVML"):
        detect("cuda")


def test_cuda_visible_devices_follows_the_cuda_runtime_rules():
    uuids = ["GPU-aaaa-1", "GPU-bbbb-2", "GPU-cccc-3", "GPU-bbbc-4"]
    assert visible_indices(uuids, None) == [0, 1, 2, 3]
    assert visible_indices(uuids, "") == []
    assert visible_indices(uuids, "2,0") == [2, 0]
    assert visible_indices(uuids, "1,7,2") == [1]          # stops at the first bad entry
    assert visible_indices(uuids, "GPU-cccc,GPU-aaaa-1") == [2, 0]
    assert visible_indices(uuids, "GPU-bbb") == []         # ambiguous prefix
    assert visible_indices(uuids, "-1") == []
    assert visible_indices(uuids, "0,0") == [0]


def test_field_reader_stops_asking_for_unsupported_fields():
    class VendorError(Exception):
        def __init__(self, value):
            self.value = value

    calls = []

    def unsupported():
        calls.append("u")
        raise VendorError(4)

    def flaky():
        calls.append("f")
        raise VendorError(2)

    r = FieldReader(VendorError, lambda e: e.value == 4)
    assert r.read(0, "power", unsupported) is None
    assert r.read(0, "power", unsupported) is None
    assert r.read(1, "power", unsupported) is None  # per device
    assert r.read(0, "temp", flaky) is None
    assert r.read(0, "temp", flaky) is None         # transient: asked again
    assert r.read(0, "util", lambda: 7) == 7
    assert calls == ["u", "u", "f", "f"]
