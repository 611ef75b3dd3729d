"""Qt-free fleet core: ring buffers, node history and alert rules."""

from __future__ import annotations

import numpy as np
import pytest

from musaops.app.core import (ConnectionState, DeployEvent, DeviceSample, ModelStatsSample,
                              NodeAddress, NodeStatus, Snapshot, parse_address)
from musaops.app.core.alerts import AlertEngine, AlertThresholds
from musaops.app.core.ring import NodeHistory, Ring


def test_ring_keeps_the_newest_rows_oldest_first_across_wraparound() -> None:
    r = Ring(4, 2)
    for i in range(10):
        r.append(float(i), (10 * i, -i))
        expect = np.arange(max(0, i - 3), i + 1, dtype=float)
        assert np.array_equal(r.times(), expect)
        assert np.array_equal(r.column(0), 10 * expect)
        assert np.array_equal(r.tail(1, 2), -expect[-2:])
    assert len(r) == 4 and r.last_time() == 9.0
    # A batch larger than the ring keeps its newest rows; one that wraps splits in two.
    r.extend(np.arange(100.0, 106.0), np.ones((6, 2), dtype=np.float32))
    assert np.array_equal(r.times(), [102, 103, 104, 105])
    r.extend(np.array([106.0, 107.0, 108.0]), np.zeros((3, 2), dtype=np.float32))
    assert np.array_equal(r.times(), [105, 106, 107, 108])
    assert np.array_equal(r.column(0), [1, 0, 0, 0])
    r.clear()
    assert len(r) == 0 and r.times().size == 0 and r.last_time() == 0.0


def test_history_memory_stays_small_for_a_big_fleet() -> None:
    h = NodeHistory(capacity=3600)
    h.add(Snapshot(1000, devices=tuple(DeviceSample(i, utilization_percent=1.0) for i in range(8)),
                   models=(ModelStatsSample("m"),)))
    # 8 devices + 1 model + host for an hour at 1 Hz: well under 1 MB a node.
    assert h.nbytes < 1_000_000


def test_history_keeps_devices_and_models_and_skips_overlapping_backfill() -> None:
    h = NodeHistory(capacity=8)
    def snap(t, util, backfill=False):
        return Snapshot(t * 1000, backfill, devices=(DeviceSample(0, utilization_percent=util,
                        memory_used_bytes=50, memory_total_bytes=100),),
                        models=(ModelStatsSample("m", running=2, ttft_p99_ms=9.0),))
    for t in range(1, 6):
        h.add(snap(t, float(t)))
    for t in range(3, 8):  # a reconnect back-fills what we already hold, then new samples
        h.add(snap(t, 100.0 + t, backfill=True))
    x, util = h.device_channel(0, "util")
    assert list(x) == [1, 2, 3, 4, 5, 6, 7]
    assert list(util) == [1, 2, 3, 4, 5, 106, 107]
    _, mem = h.device_channel(0, "mem")
    assert np.all(mem == 50.0)
    _, p99 = h.model_channel("m", "ttft_p99")
    assert np.all(p99 == 9.0)
    _, temp = h.device_channel(0, "temp")
    assert np.all(np.isnan(temp))   # not reported: NaN, never a made-up zero
    assert h.device_channel(5, "util")[0].size == 0 and h.model_channel("x", "running")[0].size == 0


def test_parse_address_accepts_host_port_and_ipv6_and_explains_errors() -> None:
    assert parse_address("10.0.0.1:50051").target == "10.0.0.1:50051"
    assert parse_address("[::1]:7").host == "::1"
    for bad, word in (("nohost", "HOST:PORT"), ("h:abc", "not a number"), ("h:0", "between")):
        with pytest.raises(ValueError, match=word):
            parse_address(bad)


def _status(state, last_seen=0.0, error=""):
    return NodeStatus("n1", NodeAddress("h", 1, name="gpu-1"), state, error, last_seen)


def test_offline_alert_respects_grace_and_clears_when_online() -> None:
    eng = AlertEngine(AlertThresholds(offline_grace_seconds=5))
    assert eng.on_status(_status(ConnectionState.ONLINE, 100.0), now=100.0) is False
    assert eng.on_status(_status(ConnectionState.OFFLINE, 100.0, "refused"), now=101.0) is False
    assert eng.tick([_status(ConnectionState.OFFLINE, 100.0, "refused")], now=107.0) is True
    [a] = eng.alerts
    assert a.kind == "offline" and "gpu-1 is offline: refused" in a.message
    assert eng.on_status(_status(ConnectionState.ONLINE, 108.0), now=108.0) is True
    assert eng.alerts == []
    # Never seen at all: alert at once.
    assert eng.on_status(_status(ConnectionState.OFFLINE, 0.0, "bad"), now=200.0) is True


def test_temperature_memory_and_error_rate_alerts() -> None:
    eng = AlertEngine(AlertThresholds(temperature_celsius=80, memory_percent=90,
                                      error_rate_percent=10))
    hot = Snapshot(1000, devices=(DeviceSample(0, temperature_celsius=85.0,
                                               memory_used_bytes=95, memory_total_bytes=100),),
                   models=(ModelStatsSample("m", requests_total=10, requests_failed=0),))
    assert eng.on_snapshot("n1", hot)
    assert {a.kind for a in eng.alerts} == {"temperature", "memory"}
    failing = Snapshot(2000, devices=(DeviceSample(0, temperature_celsius=60.0,
                                                   memory_used_bytes=10, memory_total_bytes=100),),
                       models=(ModelStatsSample("m", requests_total=20, requests_failed=5),))
    assert eng.on_snapshot("n1", failing)
    assert {a.kind for a in eng.alerts} == {"error_rate"}
    assert "5 of 10 requests failed" in eng.alerts[0].message
    assert eng.on_snapshot("n1", Snapshot(3000, backfill=True, devices=hot.devices)) is False


def test_deploy_failed_alert_until_a_later_deploy_succeeds() -> None:
    eng = AlertEngine()
    fail = DeployEvent("op1", "n1", "m", "failed", message="out of memory", done=True, ok=False)
    assert eng.on_deploy_event(fail)
    assert eng.alerts[0].kind == "deploy_failed" and "out of memory" in eng.alerts[0].message
    assert eng.on_deploy_event(DeployEvent("op2", "n1", "m", "ready", done=True, ok=True))
    assert eng.alerts == []
    assert eng.on_deploy_event(DeployEvent("op3", "n1", "m", "loading_weights")) is False


def test_batch_and_single_ingestion_agree() -> None:
    snaps = [Snapshot(t * 1000, devices=(DeviceSample(0, utilization_percent=float(t)),
                                         DeviceSample(1, temperature_celsius=40.0 + t)),
                      models=(ModelStatsSample("m", waiting=t),)) for t in range(1, 20)]
    one, batch = NodeHistory(capacity=16), NodeHistory(capacity=16)
    for s in snaps:
        one.add(s)
    batch.add_many(snaps[:5])
    batch.add_many(snaps[3:])          # overlapping history is skipped, not duplicated
    for h in (one, batch):
        assert h.last_time == 19.0
    for idx, ch in ((0, "util"), (1, "temp")):
        for a, b in zip(one.device_channel(idx, ch), batch.device_channel(idx, ch)):
            assert np.array_equal(a, b, equal_nan=True)
    assert np.array_equal(one.model_channel("m", "waiting")[1], batch.model_channel("m", "waiting")[1])
