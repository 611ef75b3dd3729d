"""Serving overhead: the engine through a real musad and gRPC against the engine in-process.

Concurrent streaming clients send Inference.Generate to a `musad serve` child process (its
own CPU share and GIL, as in production) with the demo model deployed, and the same requests
go to the same engine loaded in this process (the baseline, measured in the same run before
the daemon starts). For each number of concurrent streams it reports generated tokens/s,
stream messages/s and TTFT p50/p99 both ways, and serving_vs_engine (the daemon's tokens/s
over the in-process engine's). The demo model's steps take a millisecond or two, so the
per-token cost of the daemon (gRPC, protobuf, the event loop) shows at its largest here;
with a real model each step costs tens of milliseconds and the same overhead is spread
over far more work.

`--quick` runs fewer streams and tokens; stdout is always one JSON line; without `--json` a
readable summary also goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from musaops.daemon.demo_model import DEMO_MODEL_NAME, write_demo_model
from musaops.daemon.devrun import ensure_token, stop, wait_healthy
from musaops.v1 import inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc

MAX_CONTEXT = 512
KV_FRACTION = 0.05


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def prompt(i: int) -> str:
    return f"Request {i}: the quick brown fox jumps over the lazy dog."


def summary(tokens: int, messages: int, seconds: float, ttft_s: list[float]) -> dict:
    ttft = sorted(t * 1e3 for t in ttft_s)
    return {"tok_s": tokens / seconds, "msgs_s": messages / seconds, "ttft_p50_ms": statistics.median(ttft),
            "ttft_p99_ms": ttft[min(len(ttft) - 1, round(0.99 * (len(ttft) - 1)))]}


def bench_in_process(model_dir: Path, streams: list[int], new: int) -> dict[int, dict]:
    from musaops.daemon.engine import load_engine
    from musaops.daemon.engine.api import (DeviceTarget, EngineSpec, GenerationRequest, GenerationResult,
                                           SamplingParams)

    spec = EngineSpec(dtype="float32", max_batch=max(streams), max_context=MAX_CONTEXT,
                      kv_cache_fraction=KV_FRACTION)
    engine = load_engine(model_dir, spec, DeviceTarget("cpu"))
    sp = SamplingParams(temperature=0, max_tokens=new, ignore_eos=True)

    async def one(i: int, ttft: list[float]) -> tuple[int, int]:
        t0, messages = time.perf_counter(), 0
        async for item in engine.generate(GenerationRequest(f"r{i}", prompt=prompt(i), sampling=sp)):
            messages += 1
            if messages == 1:
                ttft.append(time.perf_counter() - t0)
            if isinstance(item, GenerationResult):
                return item.metrics.completion_tokens, messages
        raise RuntimeError("no result")

    async def run(n: int) -> dict:
        ttft: list[float] = []
        t = time.perf_counter()
        done = await asyncio.gather(*[one(i, ttft) for i in range(n)])
        return summary(sum(d[0] for d in done), sum(d[1] for d in done), time.perf_counter() - t, ttft)

    try:
        asyncio.run(run(2))  # warm
        return {n: asyncio.run(run(n)) for n in streams}
    finally:
        engine.close()


def bench_daemon(address: str, token: str | None, streams: list[int], new: int) -> dict[int, dict]:
    metadata = (("authorization", f"Bearer {token}"),) if token else None

    async def one(stub, i: int, ttft: list[float]) -> tuple[int, int]:
        request = inference_pb2.GenerateRequest(
            model=DEMO_MODEL_NAME, prompt=prompt(i),
            sampling=inference_pb2.SamplingParams(temperature=0, max_tokens=new, ignore_eos=True))
        t0, messages = time.perf_counter(), 0
        async for r in stub.Generate(request, metadata=metadata):
            messages += 1
            if messages == 1:
                ttft.append(time.perf_counter() - t0)
            if r.WhichOneof("kind") == "result":
                return r.result.usage.completion_tokens, messages
        raise RuntimeError("stream ended without a result")

    async def run_all() -> dict[int, dict]:
        out = {}
        async with grpc.aio.insecure_channel(address) as ch:
            stub = inference_pb2_grpc.InferenceStub(ch)
            await asyncio.gather(*[one(stub, i, []) for i in range(2)])  # warm
            for n in streams:
                ttft: list[float] = []
                t = time.perf_counter()
                done = await asyncio.gather(*[one(stub, i, ttft) for i in range(n)])
                out[n] = summary(sum(d[0] for d in done), sum(d[1] for d in done), time.perf_counter() - t, ttft)
        return out

    return asyncio.run(run_all())


def deploy(address: str, token: str | None, max_batch: int) -> None:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(address) as ch:
        events = list(node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(
            model=DEMO_MODEL_NAME, dtype="float32", max_batch=max_batch, max_context=MAX_CONTEXT,
            kv_cache_fraction=KV_FRACTION), metadata=metadata))
    if events[-1].stage != node_pb2.DEPLOY_STAGE_READY:
        raise SystemExit(f"deploying the demo model failed: {events[-1].message}")


def free_address() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 and 32 streams of 32 tokens")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args()
    streams, new = ([1, 32], 32) if args.quick else ([1, 16, 64, 256], 128)
    result: dict = {"bench": "serving", "model": DEMO_MODEL_NAME, "new_tokens": new, "streams": streams,
                    "cpus": os.cpu_count(), "baseline": "the same engine in the benchmark process"}
    with tempfile.TemporaryDirectory() as tmp:
        models, state = Path(tmp) / "models", Path(tmp) / "state"
        write_demo_model(models / DEMO_MODEL_NAME)
        direct = bench_in_process(models / DEMO_MODEL_NAME, streams, new)
        log("in-process engine:", {n: round(d["tok_s"]) for n, d in direct.items()})
        token_file = ensure_token(state)
        token = token_file.read_text().strip() if token_file else None
        address = free_address()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "musaops.daemon.cli", "serve", "--listen", address, "--metrics-listen", "", "--http-listen", "",
             "--models", str(models), "--state-dir", str(state), "--device", "cpu"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            wait_healthy(address, daemon)
            deploy(address, token, max(streams))
            served = bench_daemon(address, token, streams, new)
            log("through musad:", {n: round(d["tok_s"]) for n, d in served.items()})
        finally:
            if stop(daemon) not in (0, None):
                log(daemon.stderr.read()[-2000:])
    result["runs"] = [{"streams": n, "engine_in_process": direct[n], "through_musad": served[n],
                       "serving_vs_engine": served[n]["tok_s"] / direct[n]["tok_s"]} for n in streams]
    if not args.json:
        for run in result["runs"]:
            log(f"{run['streams']:>4} streams: in-process {run['engine_in_process']['tok_s']:8.0f} tok/s, "
                f"through musad {run['through_musad']['tok_s']:8.0f} tok/s "
                f"({run['through_musad']['msgs_s']:.0f} msgs/s, TTFT p50 {run['through_musad']['ttft_p50_ms']:.0f} ms)"
                f" = {run['serving_vs_engine']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
