"""Telemetry wire encoding: a sampler Reading -> serialised musaops.v1 Snapshot.

The sampler (daemon/telemetry.py) is handed `encode_snapshot` by server.py and calls it once
per tick; the bytes go to every subscriber unchanged (services/telemetry.py streams them
with a pass-through serializer). Device fields are not listed here: they come from the
device field table (devices.SAMPLE_FIELDS), whose names are common.proto's DeviceSample
fields; a table field missing from the proto stops the daemon at import with a sentence.
"""

from __future__ import annotations

from musaops.v1 import common_pb2, telemetry_pb2

from ..devices import SAMPLE_FIELDS

_DEVICE_FIELDS = tuple(f.name for f in SAMPLE_FIELDS)
_missing = [n for n in _DEVICE_FIELDS if n not in common_pb2.DeviceSample.DESCRIPTOR.fields_by_name]
if _missing:
    raise ImportError(f"devices.DeviceSample fields {_missing} have no field in common.proto's DeviceSample; "
                      "add them to protos/musaops/v1/common.proto and run scripts/gen_protos.py.")


def device_sample_pb(s) -> common_pb2.DeviceSample:
    """A devices.DeviceSample -> proto; None fields stay unset (proto3 optional)."""
    msg = common_pb2.DeviceSample(index=s.index)
    for name in _DEVICE_FIELDS:
        v = getattr(s, name)
        if v is not None:
            setattr(msg, name, v)
    return msg


def model_stats_pb(s) -> telemetry_pb2.ModelStats:
    """A deployments.ModelStatsSample -> proto (latencies in ms)."""
    st = s.stats
    ms = lambda v: v * 1000.0  # noqa: E731
    return telemetry_pb2.ModelStats(
        model=s.model, running=st.running, waiting=st.waiting, kv_cache_usage=st.kv_cache_usage,
        generation_tokens_per_second=s.generation_tokens_per_s, prompt_tokens_per_second=s.prompt_tokens_per_s,
        ttft_p50_ms=ms(s.ttft[0]), ttft_p95_ms=ms(s.ttft[1]), ttft_p99_ms=ms(s.ttft[2]),
        itl_p50_ms=ms(s.itl[0]), itl_p95_ms=ms(s.itl[1]), itl_p99_ms=ms(s.itl[2]),
        e2e_p50_ms=ms(s.e2e[0]), e2e_p99_ms=ms(s.e2e[1]),
        requests_total=st.requests_total, requests_failed=st.requests_failed,
        prompt_tokens_total=st.prompt_tokens_total, generation_tokens_total=st.generation_tokens_total,
        preemptions_total=st.preemptions_total, prefix_cache_hit_tokens_total=st.prefix_cache_hit_tokens_total,
    )


def snapshot_pb(r) -> telemetry_pb2.Snapshot:
    """A telemetry.Reading -> proto Snapshot."""
    h = r.host
    return telemetry_pb2.Snapshot(
        time_unix_ms=r.time_unix_ms,
        host=telemetry_pb2.HostSample(cpu_percent=h.cpu_percent, memory_used_bytes=h.memory_used_bytes,
                                      memory_total_bytes=h.memory_total_bytes,
                                      load_average_1m=h.load_average_1m),
        devices=[device_sample_pb(d) for d in r.devices],
        models=[model_stats_pb(m) for m in r.models],
    )


def encode_snapshot(r) -> bytes:
    """The sampler's encoder: one serialisation per tick, shared by every subscriber."""
    return snapshot_pb(r).SerializeToString()
