"""Load harness for bench_console: many small Telemetry + Node.GetInfo servers in one process.

This is load, not a stand-in for musad under test: each port serves synthetic snapshots of
N devices at a fixed interval, so the console can be measured against a 200-node fleet on a
laptop. Run as `python console_load.py --nodes 100 --devices 8` from bench_console; it
prints one line of JSON with the ports, then serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import socket
import sys
import time

import grpc

from musaops.v1 import common_pb2, node_pb2, node_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

GIB = 1 << 30
HISTORY_S = 900.0


class FakeNode(node_pb2_grpc.NodeServicer, telemetry_pb2_grpc.TelemetryServicer):
    def __init__(self, index: int, devices: int) -> None:
        self.index = index
        self.devices = devices
        self.phase = random.random() * 6.28

    async def GetInfo(self, request, context):
        return node_pb2.GetInfoResponse(
            hostname=f"gpu-{self.index:03d}", version="load-harness", api_version="v1",
            backend=common_pb2.BACKEND_MUSA,
            devices=[common_pb2.DeviceInfo(index=i, name="MTT S4000", backend=common_pb2.BACKEND_MUSA,
                                           memory_total_bytes=48 * GIB) for i in range(self.devices)],
            host_memory_total_bytes=512 * GIB, host_cpu_count=64)

    def _snapshot(self, t: float, backfill: bool) -> telemetry_pb2.Snapshot:
        devs = []
        for i in range(self.devices):
            u = 50 + 45 * math.sin(t / 20 + self.phase + i)
            devs.append(common_pb2.DeviceSample(
                index=i, utilization_percent=u, memory_used_bytes=int((0.3 + u / 200) * 48 * GIB),
                memory_total_bytes=48 * GIB, temperature_celsius=40 + u / 3,
                power_watts=100 + 3 * u, power_limit_watts=450))
        models = [telemetry_pb2.ModelStats(
            model="llama-3-8b", running=int(u / 10), waiting=int(u / 30),
            generation_tokens_per_second=20 * u, ttft_p50_ms=80 + u, ttft_p95_ms=120 + u,
            ttft_p99_ms=150 + u, itl_p50_ms=20, itl_p95_ms=30, itl_p99_ms=40)]
        return telemetry_pb2.Snapshot(
            time_unix_ms=int(t * 1000), backfill=backfill,
            host=telemetry_pb2.HostSample(cpu_percent=30, memory_used_bytes=100 * GIB,
                                          memory_total_bytes=512 * GIB),
            devices=devs, models=models)

    async def Stream(self, request, context):
        interval = (request.interval_ms or 1000) / 1000.0
        now = time.time()
        # Like musad, history is capped at the ring span (--history seconds).
        for k in range(int(min(request.backfill_seconds, HISTORY_S) / interval), 0, -1):
            yield self._snapshot(now - k * interval, True)
        while True:
            yield self._snapshot(time.time(), False)
            await asyncio.sleep(interval)


async def serve(nodes: int, devices: int) -> None:
    servers = []
    ports = []
    for i in range(nodes):
        server = grpc.aio.server()
        fake = FakeNode(i, devices)
        node_pb2_grpc.add_NodeServicer_to_server(fake, server)
        telemetry_pb2_grpc.add_TelemetryServicer_to_server(fake, server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    print(json.dumps({"ports": ports}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # serve until the parent closes stdin
    await asyncio.gather(*(s.stop(0) for s in servers))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--devices", type=int, default=8)
    a = p.parse_args()
    asyncio.run(serve(a.nodes, a.devices))


if __name__ == "__main__":
    main()
