"""Telemetry and control-plane cost of a running musad, measured on a real subprocess.

Figures (all measured in this run, daemon CPU read from /proc via psutil):
- idle_core_percent: the daemon with no subscriber (sampler at 1 Hz for the history ring):
  the baseline.
- cpu_s_per_1000_snapshots_1_sub / _100_subs: daemon CPU seconds per 1,000 snapshots
  delivered at 10 Hz (interval 100 ms) to 1 and to 100 concurrent Telemetry.Stream
  subscribers; core_percent_1_sub / _100_subs: the same as % of one core.
- floor_core_percent_100_subs: a bare grpc.aio server process (no sampling, no auth) that
  streams a pre-encoded message of the same size to 100 subscribers every 100 ms: the cost
  of gRPC Python itself; core_percent_100_subs_vs_floor compares musad with it.
- getinfo_p50_ms / p99: Node.GetInfo round trip on loopback (sync stub, one channel), vs
  health_p50_ms / p99: grpc.health Check on the same server (the floor for any RPC through
  the same server and interceptors); getinfo_vs_health_p50 is their ratio.
Auth is on (a viewer token) as in production. Goals: < 1 % of one core at 10 Hz with 100
subscribers; GetInfo p50 < 1 ms. `--quick` shortens the windows; `--json` (default) prints
one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from musaops.v1 import node_pb2, node_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

MUSAD = [sys.executable, "-m", "musaops.daemon.cli"]


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def _floor_server(size: int) -> None:
    """`--floor-server SIZE`: stream SIZE bytes every 100 ms to every caller of Stream."""
    async def serve() -> None:
        payload = b"\x08" + b"\x01" * (size - 1)

        async def stream(_request, _context):
            while True:
                yield payload
                await asyncio.sleep(0.1)

        server = grpc.aio.server()
        handler = grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=telemetry_pb2.StreamRequest.FromString, response_serializer=bytes)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("musaops.v1.Telemetry", {"Stream": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"listening on floor (port {port})", file=sys.stderr, flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


class Daemon:
    def __init__(self, tmp: Path, floor_size: int = 0):
        if floor_size:
            self._start([sys.executable, __file__, "--floor-server", str(floor_size)])
            self.metadata = ()
            return
        state = tmp / "state"
        out = subprocess.run([*MUSAD, "token", "create", "--name", "bench", "--role", "viewer",
                              "--out", str(tmp / "token"), "--state-dir", str(state)], capture_output=True, text=True)
        self.metadata = (("authorization", f"Bearer {(tmp / 'token').read_text().strip()}"),) if out.returncode == 0 else ()
        self._start([*MUSAD, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--device", "cpu",
                     "--state-dir", str(state), "--models", str(tmp / "models")])

    def _start(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.port = None
        for line in self.proc.stderr:
            m = re.search(r"listening on .* \(port (\d+)\)", line)
            if m:
                self.port = int(m.group(1))
                break
            if "level=ERROR" in line:
                log(line.rstrip())
        if self.port is None:
            raise SystemExit("musad did not start")
        # keep draining its log so a full pipe never blocks it
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.address = f"127.0.0.1:{self.port}"
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


async def _stream_window(d: Daemon, subscribers: int, seconds: float) -> tuple[int, float, float]:
    """Runs `subscribers` streams at 100 ms; counts snapshots during a `seconds` window
    (after a warm-up) and the daemon CPU spent in it. Returns (snapshots, cpu_s, wall_s)."""
    count = 0
    measuring = asyncio.Event()
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = telemetry_pb2_grpc.TelemetryStub(ch)

        async def one():
            nonlocal count
            async for _ in stub.Stream(telemetry_pb2.StreamRequest(interval_ms=100), metadata=d.metadata):
                if measuring.is_set():
                    count += 1

        tasks = [asyncio.ensure_future(one()) for _ in range(subscribers)]
        await asyncio.sleep(1.5)  # all streams open and flowing
        cpu0, t0 = d.cpu_s(), time.perf_counter()
        measuring.set()
        await asyncio.sleep(seconds)
        measuring.clear()
        cpu1, t1 = d.cpu_s(), time.perf_counter()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return count, cpu1 - cpu0, t1 - t0


def _idle(d: Daemon, seconds: float) -> float:
    cpu0, t0 = d.cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return (d.cpu_s() - cpu0) / (time.perf_counter() - t0) * 100


def _percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return s[len(s) // 2] * 1000, s[min(len(s) - 1, int(len(s) * 0.99))] * 1000


def _round_trips(d: Daemon, n: int) -> dict:
    with grpc.insecure_channel(d.address) as ch:
        node = node_pb2_grpc.NodeStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        calls = {
            "getinfo": lambda: node.GetInfo(node_pb2.GetInfoRequest(), metadata=d.metadata),
            "health": lambda: health.Check(health_pb2.HealthCheckRequest()),
        }
        out = {}
        for name, call in calls.items():
            for _ in range(200):  # warm-up
                call()
            times = []
            for _ in range(n):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
            out[name] = _percentiles(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows (about 30 s in all)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    ap.add_argument("--floor-server", type=int, metavar="SIZE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor_server:
        return _floor_server(args.floor_server)
    window = 4.0 if args.quick else 15.0
    calls = 1000 if args.quick else 5000
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp))
        try:
            time.sleep(1.0)
            idle = _idle(d, window)
            log(f"idle: {idle:.3f} % of a core")
            n1, cpu1, wall1 = asyncio.run(_stream_window(d, 1, window))
            log(f"1 subscriber: {n1} snapshots, {cpu1:.3f} CPU s in {wall1:.1f} s")
            n100, cpu100, wall100 = asyncio.run(_stream_window(d, 100, window))
            log(f"100 subscribers: {n100} snapshots, {cpu100:.3f} CPU s in {wall100:.1f} s")
            rt = _round_trips(d, calls)
            with grpc.insecure_channel(d.address) as ch:
                size = len(next(telemetry_pb2_grpc.TelemetryStub(ch).Stream(
                    telemetry_pb2.StreamRequest(interval_ms=100), metadata=d.metadata)).SerializeToString())
        finally:
            d.stop()
        floor = Daemon(Path(tmp), floor_size=size)
        try:
            nf, cpuf, wallf = asyncio.run(_stream_window(floor, 100, window))
            log(f"floor, 100 subscribers: {nf} snapshots, {cpuf:.3f} CPU s in {wallf:.1f} s")
        finally:
            floor.stop()
    floor_core = cpuf / wallf * 100
    core100 = cpu100 / wall100 * 100
    result = {
        "bench": "telemetry",
        "window_s": window,
        "idle_core_percent": round(idle, 3),
        "snapshots_1_sub": n1,
        "cpu_s_per_1000_snapshots_1_sub": round(cpu1 / max(n1, 1) * 1000, 4),
        "core_percent_1_sub": round(cpu1 / wall1 * 100, 3),
        "snapshots_100_subs": n100,
        "cpu_s_per_1000_snapshots_100_subs": round(cpu100 / max(n100, 1) * 1000, 4),
        "core_percent_100_subs": round(core100, 3),
        "core_percent_100_subs_vs_idle": round(core100 / idle, 2) if idle > 0 else None,
        "snapshot_bytes": size,
        "floor_core_percent_100_subs": round(floor_core, 3),
        "floor_cpu_s_per_1000_snapshots_100_subs": round(cpuf / max(nf, 1) * 1000, 4),
        "core_percent_100_subs_vs_floor": round(core100 / floor_core, 2) if floor_core > 0 else None,
        "getinfo_p50_ms": round(rt["getinfo"][0], 4),
        "getinfo_p99_ms": round(rt["getinfo"][1], 4),
        "health_p50_ms": round(rt["health"][0], 4),
        "health_p99_ms": round(rt["health"][1], 4),
        "getinfo_vs_health_p50": round(rt["getinfo"][0] / rt["health"][0], 3),
        "auth": bool(d.metadata),
        "goal_core_percent_100_subs_lt_1": core100 < 1.0,
        "goal_getinfo_p50_lt_1ms": rt["getinfo"][0] < 1.0,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
