"""The same model three ways: vLLM's own server called directly, the same vLLM child
behind musad (Inference.Generate), and musad's built-in engine.

Writes bench_engine.py's 0.4 B bench model, starts `musad serve` (CPU) with
engines.vllm.python pointing at the vLLM environment (.venv-vllm unless --vllm-python),
deploys the model with engine "vllm" (vllm_ready_s: Deploy to READY) and a copy of it on
the built-in engine, both at once. Then --rounds rounds, each sending N concurrent requests
of P prompt + G new tokens (greedy, EOS ignored) once per path: straight to the child's
OpenAI API, through musad to the child, through musad to the built-in engine, the paths
interleaved and their order rotated from round to round so that drift of a shared machine
falls on all three alike. TTFT is measured by the client (to the first message that
carries text). Each round gives each path its throughput and TTFT p50/p99 from that same
run; the keys report the median over rounds of each figure (per-round figures under
"rounds"), and proxy_overhead_ttft_p50_ms is the median of the per-round differences
(via musad minus direct, paired rounds).
Keys: vllm_direct_tok_s, vllm_via_musad_tok_s, builtin_tok_s, *_ttft_p50_ms / *_ttft_p99_ms,
proxy_overhead_ttft_p50_ms, via_musad_vs_direct, vllm_ready_s, builtin_ready_s.
--quick: a 2-layer model, 4 requests of 8 new tokens, one round, eager mode (checks that
the benchmark works; its figures mean nothing). stdout is one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[2]


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else 0.0


def summary(tokens: int, seconds: float, ttft: list[float]) -> dict:
    return {"tok_s": tokens / seconds, "ttft_p50_ms": pct(ttft, 50) * 1e3, "ttft_p99_ms": pct(ttft, 99) * 1e3}


def prompt_text(i: int, length: int) -> str:
    import random

    rng = random.Random(i)
    return " ".join(f"w{rng.randrange(3, 32000)}" for _ in range(length))


async def run_direct(port: int, name: str, n: int, plen: int, new: int) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=None,
                                 limits=httpx.Limits(max_connections=None), trust_env=False) as client:
        async def one(i: int, ttft: list[float]) -> int:
            body = {"model": name, "prompt": prompt_text(i, plen), "max_tokens": new, "temperature": 0,
                    "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
            t0, got, n_tok = time.perf_counter(), False, 0
            async with client.stream("POST", "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if not got and chunk.get("choices") and chunk["choices"][0].get("text"):
                        ttft.append(time.perf_counter() - t0)
                        got = True
                    if chunk.get("usage"):
                        n_tok = chunk["usage"]["completion_tokens"]
            return n_tok

        ttft: list[float] = []
        t0 = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i, ttft) for i in range(n))))
        return summary(tokens, time.perf_counter() - t0, ttft)


async def run_musad(address: str, model: str, n: int, plen: int, new: int) -> dict:
    import grpc

    from musaops.v1 import inference_pb2, inference_pb2_grpc

    async with grpc.aio.insecure_channel(address) as ch:
        stub = inference_pb2_grpc.InferenceStub(ch)

        async def one(i: int, ttft: list[float]) -> int:
            req = inference_pb2.GenerateRequest(model=model, prompt=prompt_text(i, plen), sampling=inference_pb2.SamplingParams(
                temperature=0.0, max_tokens=new, ignore_eos=True))
            t0, got, n_tok = time.perf_counter(), False, 0
            async for m in stub.Generate(req):
                if not got and m.text:
                    ttft.append(time.perf_counter() - t0)
                    got = True
                if m.HasField("result"):
                    n_tok = m.result.usage.completion_tokens
            return n_tok

        ttft: list[float] = []
        t0 = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i, ttft) for i in range(n))))
        return summary(tokens, time.perf_counter() - t0, ttft)


def deploy(address: str, model: str, **kw) -> float:
    import grpc

    from musaops.v1 import node_pb2, node_pb2_grpc

    t0 = time.perf_counter()
    with grpc.insecure_channel(address) as ch:
        last = list(node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(model=model, **kw)))[-1]
    if last.stage != node_pb2.DEPLOY_STAGE_READY:
        raise SystemExit(f"deploy of {model} failed: {last.message}")
    return time.perf_counter() - t0


def undeploy(address: str, model: str) -> None:
    import grpc

    from musaops.v1 import node_pb2, node_pb2_grpc

    with grpc.insecure_channel(address) as ch:
        node_pb2_grpc.NodeStub(ch).Undeploy(node_pb2.UndeployRequest(model=model))


def child_port(address: str, model: str) -> int:
    import grpc
    import psutil

    from musaops.v1 import node_pb2, node_pb2_grpc

    with grpc.insecure_channel(address) as ch:
        models = node_pb2_grpc.NodeStub(ch).ListModels(node_pb2.ListModelsRequest()).models
    pid = next(m.deployment.pid for m in models if m.name == model)
    return next(c.laddr.port for c in psutil.Process(pid).net_connections() if c.status == "LISTEN")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--layers", type=int, default=24, help="bench model depth (24 = the 0.4 B model)")
    ap.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--eager", action="store_true", help="vLLM eager mode (faster start-up, slower steps)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the three paths, interleaved")
    ap.add_argument("--quick", action="store_true", help="tiny run that checks the benchmark works")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.new_tokens, args.layers, args.rounds, args.eager = 4, 8, 2, 1, True
    from bench_engine import write_model
    from bench_serving import free_address
    from musaops.daemon.devrun import stop, wait_healthy

    n, plen, new = args.requests, args.prompt_tokens, args.new_tokens
    result: dict = {"bench": "backends", "requests": n, "prompt_tokens": plen, "new_tokens": new,
                    "cpus": os.cpu_count(), "vllm_eager": args.eager, "rounds_run": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        models, state = Path(tmp) / "models", Path(tmp) / "state"
        result["parameters"] = write_model(models / "bench", args.layers)
        address = free_address()
        toml = Path(tmp) / "musad.toml"
        toml.write_text(f'[engines.vllm]\npython = "{args.vllm_python}"\nenforce_eager = {str(args.eager).lower()}\n'
                        "cpu_kv_cache_gib = 2.0\n[auth]\nrequired = false\n")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "musaops.daemon.cli", "serve", "--config", str(toml), "--listen", address,
             "--metrics-listen", "", "--http-listen", "", "--models", str(models), "--state-dir", str(state),
             "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            wait_healthy(address, daemon)
            result["vllm_ready_s"] = deploy(address, "bench", engine="vllm", max_batch=n, max_context=512,
                                            dtype="bfloat16")
            log("vLLM ready after", round(result["vllm_ready_s"], 1), "s")
            shutil.copytree(models / "bench", models / "bench-builtin")
            result["builtin_ready_s"] = deploy(address, "bench-builtin", max_batch=n, max_context=512)
            port = child_port(address, "bench")
            paths = {"vllm_direct": lambda k: run_direct(port, "bench", k, plen, new if k == n else 8),
                     "vllm_via_musad": lambda k: run_musad(address, "bench", k, plen, new if k == n else 8),
                     "builtin": lambda k: run_musad(address, "bench-builtin", k, plen, new if k == n else 8)}
            for run in paths.values():   # warm-up
                asyncio.run(run(4))
            rounds: list[dict[str, dict]] = []
            names = list(paths)
            for r in range(args.rounds):
                order = names[r % 3:] + names[:r % 3]
                rounds.append({name: asyncio.run(paths[name](n)) for name in order})
                log("round", r + 1, json.dumps({k: {m: round(x, 1) for m, x in v.items()} for k, v in rounds[-1].items()}))
            undeploy(address, "bench")
            undeploy(address, "bench-builtin")
        finally:
            if stop(daemon) not in (0, None):
                log(daemon.stderr.read()[-2000:])
    for key in ("vllm_direct", "vllm_via_musad", "builtin"):
        for figure in ("tok_s", "ttft_p50_ms", "ttft_p99_ms"):
            result[f"{key}_{figure}"] = statistics.median(r[key][figure] for r in rounds)
    result["proxy_overhead_ttft_p50_ms"] = statistics.median(
        r["vllm_via_musad"]["ttft_p50_ms"] - r["vllm_direct"]["ttft_p50_ms"] for r in rounds)
    result["via_musad_vs_direct"] = statistics.median(
        r["vllm_via_musad"]["tok_s"] / r["vllm_direct"]["tok_s"] for r in rounds)
    result["rounds"] = rounds
    print(json.dumps(result))


if __name__ == "__main__":
    main()
