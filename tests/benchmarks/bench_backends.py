"""The same model three ways: vLLM's own server called directly, the same vLLM child
behind musad (Inference.Generate), and musad's built-in engine.

Writes bench_engine.py's 0.4 B bench model, starts `musad serve` (CPU) with
engines.vllm.python pointing at the vLLM environment (.venv-vllm unless --vllm-python),
deploys the model with engine "vllm" (vllm_ready_s: Deploy to READY), then sends N
concurrent requests of P prompt + G new tokens (greedy, EOS ignored) straight to the
child's OpenAI API and through musad, twice each alternately (the better run of each is
reported), undeploys, deploys it on the built-in engine and sends the same load through
musad. TTFT is measured by the client: to the first message that carries text.
Keys: vllm_direct_tok_s, vllm_via_musad_tok_s, builtin_tok_s, *_ttft_p50_ms / *_ttft_p99_ms,
proxy_overhead_ttft_p50_ms (via musad minus direct), via_musad_vs_direct, vllm_ready_s.
stdout is one JSON line.
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
    args = ap.parse_args()
    from bench_engine import write_model
    from bench_serving import free_address
    from musaops.daemon.devrun import stop, wait_healthy

    n, plen, new = args.requests, args.prompt_tokens, args.new_tokens
    result: dict = {"bench": "backends", "requests": n, "prompt_tokens": plen, "new_tokens": new,
                    "cpus": os.cpu_count(), "vllm_eager": args.eager}
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
            port = child_port(address, "bench")
            asyncio.run(run_direct(port, "bench", 4, plen, 8))       # warm-up
            asyncio.run(run_musad(address, "bench", 4, plen, 8))
            runs: dict[str, list[dict]] = {"direct": [], "musad": []}
            for _ in range(2):
                runs["direct"].append(asyncio.run(run_direct(port, "bench", n, plen, new)))
                runs["musad"].append(asyncio.run(run_musad(address, "bench", n, plen, new)))
                log("direct", runs["direct"][-1], "via musad", runs["musad"][-1])
            direct = max(runs["direct"], key=lambda r: r["tok_s"])
            via = max(runs["musad"], key=lambda r: r["tok_s"])
            undeploy(address, "bench")
            deploy(address, "bench", max_batch=n, max_context=512)
            asyncio.run(run_musad(address, "bench", 4, plen, 8))
            builtin = max((asyncio.run(run_musad(address, "bench", n, plen, new)) for _ in range(2)),
                          key=lambda r: r["tok_s"])
            log("built-in", builtin)
        finally:
            if stop(daemon) not in (0, None):
                log(daemon.stderr.read()[-2000:])
    for key, r in (("vllm_direct", direct), ("vllm_via_musad", via), ("builtin", builtin)):
        result[f"{key}_tok_s"] = r["tok_s"]
        result[f"{key}_ttft_p50_ms"] = r["ttft_p50_ms"]
        result[f"{key}_ttft_p99_ms"] = r["ttft_p99_ms"]
    result["proxy_overhead_ttft_p50_ms"] = via["ttft_p50_ms"] - direct["ttft_p50_ms"]
    result["via_musad_vs_direct"] = via["tok_s"] / direct["tok_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
