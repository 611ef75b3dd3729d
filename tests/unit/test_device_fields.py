"""The device field table: one list of names from the daemon's DeviceSample dataclass to the
wire (common.proto), /metrics and the console's DeviceSample. A name missing on any side fails
here; tests/daemon/test_device_fields_e2e.py checks that every field really reaches the wire
and /metrics from a running daemon."""

from __future__ import annotations

import dataclasses

from musaops.app.core import samples as console
from musaops.daemon.devices import SAMPLE_FIELDS, DeviceSample
from musaops.daemon.metrics import DaemonMetrics
from musaops.daemon.services.telemetry_encode import device_sample_pb
from musaops.v1 import common_pb2

PROTO = [f.name for f in common_pb2.DeviceSample.DESCRIPTOR.fields]


def test_daemon_console_and_proto_name_the_same_fields_in_the_same_order() -> None:
    daemon = [f.name for f in dataclasses.fields(DeviceSample)]
    assert daemon == PROTO
    assert [f.name for f in dataclasses.fields(console.DeviceSample)] == PROTO
    assert [f.name for f in SAMPLE_FIELDS] == PROTO[1:]  # index is the key, not a reading


def test_every_optional_proto_field_distinguishes_unset() -> None:
    for f in common_pb2.DeviceSample.DESCRIPTOR.fields:
        if f.name != "index":
            assert f.has_presence, f"common.proto DeviceSample.{f.name} must be `optional`"


def test_every_table_row_has_a_unit_help_and_console_label() -> None:
    for f in SAMPLE_FIELDS:
        assert f.help.endswith("."), f.name
        if f.metric:
            assert f.metric == f"device_{f.name}"
    for f in dataclasses.fields(console.DeviceSample):
        if f.name != "index":
            assert f.metadata["label"], f.name


def _full_sample() -> DeviceSample:
    values = {}
    for f in dataclasses.fields(DeviceSample):
        if f.init and f.name != "index":
            values[f.name] = 1 if "int" in str(f.type) else (True if "bool" in str(f.type) else 1.5)
    return DeviceSample(index=0, **values)


def test_encoder_and_gauges_cover_every_row() -> None:
    sample = _full_sample()
    msg = device_sample_pb(sample)
    assert {f.name for f, _ in msg.ListFields()} >= {f.name for f in SAMPLE_FIELDS if getattr(sample, f.name) is not None}
    metrics = DaemonMetrics(device_names=lambda: {0: "dev"}, device_samples=lambda: [sample])
    families = {m.name for m in metrics.registry.collect()}
    for f in SAMPLE_FIELDS:
        if f.metric:
            assert f"musad:{f.metric}" in families, f.name
