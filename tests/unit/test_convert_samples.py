"""convert.snapshot builds the console's samples positionally (it runs ~1,600 times a second
at 200 nodes): every proto field must still land in the dataclass field of the same name,
and an unset optional field must become None, never a made-up zero."""

from __future__ import annotations

import dataclasses

from musaops.app.core.samples import DeviceSample, ModelStatsSample
from musaops.app.services import convert
from musaops.v1 import common_pb2, telemetry_pb2


def _distinct_values(descriptor) -> dict:
    """A different value for every field (ints for integer fields, x.5 floats otherwise)."""
    out = {}
    for n, f in enumerate(descriptor.fields, start=1):
        if f.type in (f.TYPE_FLOAT, f.TYPE_DOUBLE):
            out[f.name] = n + 0.5
        elif f.type == f.TYPE_STRING:
            out[f.name] = f"s{n}"
        elif f.type == f.TYPE_BOOL:
            out[f.name] = True  # set and not the default, so ListFields reports it
        else:
            out[f.name] = n
    return out


def test_every_device_field_lands_in_the_field_of_the_same_name() -> None:
    values = _distinct_values(common_pb2.DeviceSample.DESCRIPTOR)
    sample = convert.device_sample(common_pb2.DeviceSample(**values))
    assert {f.name for f in dataclasses.fields(DeviceSample)} == set(values)
    assert dataclasses.asdict(sample) == values


def test_unset_device_fields_are_none_and_zero_is_kept() -> None:
    sample = convert.device_sample(common_pb2.DeviceSample(index=3, utilization_percent=0.0))
    assert sample.index == 3 and sample.utilization_percent == 0.0
    assert all(getattr(sample, f.name) is None for f in dataclasses.fields(DeviceSample)
               if f.name not in ("index", "utilization_percent"))


def test_snapshot_carries_host_devices_and_models() -> None:
    model_values = _distinct_values(telemetry_pb2.ModelStats.DESCRIPTOR)
    msg = telemetry_pb2.Snapshot(
        time_unix_ms=1234, backfill=True,
        host=telemetry_pb2.HostSample(cpu_percent=12.5, memory_used_bytes=7,
                                      memory_total_bytes=9, load_average_1m=0.5),
        devices=[common_pb2.DeviceSample(index=i, power_watts=100.5 + i) for i in range(3)],
        models=[telemetry_pb2.ModelStats(**model_values)])
    snap = convert.snapshot(msg)
    assert snap.time_unix_ms == 1234 and snap.backfill is True
    assert (snap.host.cpu_percent, snap.host.memory_used_bytes, snap.host.memory_total_bytes,
            snap.host.load_average_1m) == (12.5, 7, 9, 0.5)
    assert [(d.index, d.power_watts) for d in snap.devices] == [(0, 100.5), (1, 101.5), (2, 102.5)]
    assert isinstance(snap.devices, tuple) and isinstance(snap.models, tuple)
    assert snap.models == (ModelStatsSample(**model_values),)
