"""HTTP front door against gRPC: the same concurrent requests through Inference.Generate
and through POST /v1/completions (streaming SSE), and through HTTP again with limits set on
the key (high enough never to trigger), against one `musad serve` child with the demo model.

Each way runs `--rounds` times, interleaved (gRPC, HTTP, HTTP with limits, gRPC, ...), and
the median round counts. Reported: generated tokens/s, TTFT p50/p99, and the ratios
http_vs_grpc (goal >= 0.95) and limits_cost (1 - limited/unlimited HTTP; goal < 0.01).
The demo model's steps take a millisecond or two, so transport costs show at their largest.
If `vllm` is importable, `vllm bench serve` is not run here (it needs a vLLM-served model
and tokenizer); the JSON says so.

stdout is one JSON line; without `--json` a readable summary also goes to stderr.
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
import httpx

from musaops.daemon.demo_model import DEMO_MODEL_NAME, write_demo_model
from musaops.daemon.devrun import ensure_token, stop, wait_healthy
from musaops.v1 import inference_pb2, inference_pb2_grpc, keys_pb2, keys_pb2_grpc, node_pb2, node_pb2_grpc

MAX_CONTEXT = 512
KV_FRACTION = 0.05
HIGH = dict(rpm=10_000_000, tpm=2_000_000_000, concurrent=100_000, daily_tokens=10**15)


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def prompt(i: int, words: int) -> str:
    return f"Request {i}: " + " ".join(["the quick brown fox jumps over the lazy dog"] * (words // 9 + 1))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary(tokens: int, prompt_tokens: int, seconds: float, ttft_s: list[float]) -> dict:
    ttft = sorted(t * 1e3 for t in ttft_s)
    return {"tok_s": tokens / seconds, "prompt_tokens": prompt_tokens, "seconds": seconds,
            "ttft_p50_ms": statistics.median(ttft),
            "ttft_p99_ms": ttft[min(len(ttft) - 1, round(0.99 * (len(ttft) - 1)))]}


async def grpc_round(stub, key: str, n: int, words: int, new: int) -> dict:
    md = (("authorization", f"Bearer {key}"),)

    async def one(i: int, ttft: list[float]) -> tuple[int, int]:
        req = inference_pb2.GenerateRequest(model=DEMO_MODEL_NAME, prompt=prompt(i, words),
                                            sampling=inference_pb2.SamplingParams(temperature=0, max_tokens=new,
                                                                                  ignore_eos=True))
        t0, first = time.perf_counter(), True
        async for r in stub.Generate(req, metadata=md):
            if first:
                ttft.append(time.perf_counter() - t0)
                first = False
            if r.HasField("result"):
                return r.result.usage.completion_tokens, r.result.usage.prompt_tokens
        raise RuntimeError("stream ended without a result")

    ttft: list[float] = []
    t = time.perf_counter()
    done = await asyncio.gather(*[one(i, ttft) for i in range(n)])
    return summary(sum(d[0] for d in done), done[0][1], time.perf_counter() - t, ttft)


async def http_round(client: httpx.AsyncClient, key: str, n: int, words: int, new: int) -> dict:
    async def one(i: int, ttft: list[float]) -> tuple[int, int]:
        body = {"model": DEMO_MODEL_NAME, "prompt": prompt(i, words), "max_tokens": new, "temperature": 0,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        t0, first, usage = time.perf_counter(), True, None
        async with client.stream("POST", "/v1/completions", json=body,
                                 headers={"Authorization": f"Bearer {key}"}) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if first:
                    ttft.append(time.perf_counter() - t0)
                    first = False
                if line == "data: [DONE]":
                    break
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]
        return usage["completion_tokens"], usage["prompt_tokens"]

    ttft: list[float] = []
    t = time.perf_counter()
    done = await asyncio.gather(*[one(i, ttft) for i in range(n)])
    return summary(sum(d[0] for d in done), done[0][1], time.perf_counter() - t, ttft)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--prompt-words", type=int, default=40, help="~64 prompt tokens with the demo tokenizer")
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    result: dict = {"bench": "http", "model": DEMO_MODEL_NAME, "streams": args.streams, "new_tokens": args.new,
                    "rounds": args.rounds, "cpus": os.cpu_count(), "baseline": "gRPC Generate in the same run"}
    with tempfile.TemporaryDirectory() as tmp:
        models, state = Path(tmp) / "models", Path(tmp) / "state"
        write_demo_model(models / DEMO_MODEL_NAME)
        admin = ensure_token(state).read_text().strip()
        address, hport = f"127.0.0.1:{free_port()}", free_port()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "musaops.daemon.cli", "serve", "--listen", address, "--metrics-listen", "",
             "--http-listen", f"127.0.0.1:{hport}", "--models", str(models), "--state-dir", str(state),
             "--device", "cpu"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            wait_healthy(address, daemon)
            md = (("authorization", f"Bearer {admin}"),)
            with grpc.insecure_channel(address) as ch:
                events = list(node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(
                    model=DEMO_MODEL_NAME, dtype="float32", max_batch=args.streams, max_context=MAX_CONTEXT,
                    kv_cache_fraction=KV_FRACTION), metadata=md))
                assert events[-1].stage == node_pb2.DEPLOY_STAGE_READY, events[-1].message
                keys = keys_pb2_grpc.KeysStub(ch)
                plain = keys.Create(keys_pb2.CreateKeyRequest(name="bench", role="client"), metadata=md).secret
                limited = keys.Create(keys_pb2.CreateKeyRequest(name="bench-limited", role="client",
                                                                limits=keys_pb2.KeyLimits(**HIGH)),
                                      metadata=md).secret
            result["runs"] = asyncio.run(_runs(address, hport, plain, limited, args))
        finally:
            if stop(daemon) not in (0, None):
                log(daemon.stderr.read()[-2000:])
    med = {way: {k: statistics.median(r[k] for r in rounds) for k in ("tok_s", "ttft_p50_ms", "ttft_p99_ms")}
           for way, rounds in result["runs"].items()}
    result["median"] = med
    result["http_vs_grpc"] = med["http"]["tok_s"] / med["grpc"]["tok_s"]
    result["limits_cost"] = 1 - med["http_limits"]["tok_s"] / med["http"]["tok_s"]
    try:
        import vllm  # noqa: F401
        result["vllm_bench_serve"] = "vllm is installed, but `vllm bench serve` needs a model vLLM can load " \
                                     "and its tokenizer; not run against the demo model"
    except ImportError:
        result["vllm_bench_serve"] = "vllm is not installed in this environment; not run"
    if not args.json:
        for way, m in med.items():
            log(f"{way:>12}: {m['tok_s']:8.0f} tok/s, TTFT p50 {m['ttft_p50_ms']:.0f} ms, p99 {m['ttft_p99_ms']:.0f} ms")
        log(f"http_vs_grpc {result['http_vs_grpc']:.3f}, limits_cost {result['limits_cost']:+.3f}")
    print(json.dumps(result))


async def _runs(address: str, hport: int, plain: str, limited: str, args) -> dict:  # noqa: ANN001
    out: dict[str, list[dict]] = {"grpc": [], "http": [], "http_limits": []}
    n, w, new = args.streams, args.prompt_words, args.new
    async with grpc.aio.insecure_channel(address) as ch, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{hport}", timeout=120,
            limits=httpx.Limits(max_connections=n * 2, max_keepalive_connections=n * 2)) as client:
        stub = inference_pb2_grpc.InferenceStub(ch)
        await grpc_round(stub, plain, 4, w, 8)   # warm both paths
        await http_round(client, plain, 4, w, 8)
        for _ in range(args.rounds):
            out["grpc"].append(await grpc_round(stub, plain, n, w, new))
            out["http"].append(await http_round(client, plain, n, w, new))
            out["http_limits"].append(await http_round(client, limited, n, w, new))
    return out


if __name__ == "__main__":
    main()
