"""Models: a real GGUF from Deploy to READY against transformers, and a node-to-node pull
against `cp`, in one run.

- deploy: SmolLM2-135M-Instruct Q4_1 (starter_model.fetch(): cached, digest-checked) in a
  `musad serve` child's repository; after one ListModels (as the console does), Deploy ->
  READY on the built-in engine, fp32 and bf16, `--rounds` times each (Undeploy between);
  against transformers' `AutoModelForCausalLM.from_pretrained(gguf_file=...)` of the same
  file in fp32 in this process (imports done before timing; its tokenizer load is timed
  apart and not counted). Goal: deploy_speedup (transformers model load / musad fp32
  Deploy, medians) >= 5.
- pull: two `musad serve` children on loopback; the source holds a folder of `--pull-mb`
  MiB of random bytes (two shards and a config.json); the receiver pulls it with PullModel
  (SHA-256 of every file checked, fsync'd, installed by rename), then deletes it, `--rounds`
  times. The first pull also pays the source's digests (cold); later ones find them cached
  in the source's memory (warm). Baseline: `cp -r` of the same folder on the same file
  system, same rounds (`cp_sync_s` adds a `sync` of the copy, which musad does per file).
  Goal: pull_vs_cp (warm pull rate / cp rate, medians) >= 0.5. Memory: the receiver's peak
  RSS during each pull (VmHWM after resetting it through /proc/PID/clear_refs) against its
  RSS before: rss_growth_mib stays small whatever the model's size. CPU seconds of each
  daemon per pull (source_cpu_s, receiver_cpu_s) show where the time goes on a busy host.
  The same total also runs as one shard and as four shards (`layouts`; the receiver pulls a
  model of several files over up to `models.pull_streams` streams, `--pull-streams` sets it):
  single_file_mib_s / four_shard_mib_s and their ratios to cp of the same folder.

No fetch possible: the deploy part says why and the pull part still runs. stdout is one
JSON line; without `--json` a readable summary also goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from musaops.daemon import starter_model
from musaops.daemon.devrun import ensure_token, stop, wait_healthy
from musaops.v1 import models_pb2, models_pb2_grpc, node_pb2, node_pb2_grpc


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One `musad serve` child with its own state and repository."""

    def __init__(self, root: Path, name: str, models_config: str = ""):
        self.models, self.state = root / name / "models", root / name / "state"
        self.models.mkdir(parents=True)
        self.token = ensure_token(self.state).read_text().strip()
        self.address = f"127.0.0.1:{free_port()}"
        self.md = (("authorization", f"Bearer {self.token}"),)
        config = []
        if models_config:   # extra [models] keys for this daemon
            (root / name / "musad.toml").write_text(f"[models]\n{models_config}\n")
            config = ["--config", str(root / name / "musad.toml")]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "musaops.daemon.cli", "serve", *config, "--listen", self.address,
             "--metrics-listen", "", "--http-listen", "", "--models", str(self.models), "--state-dir", str(self.state),
             "--device", "cpu", "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def __enter__(self):
        wait_healthy(self.address, self.proc)
        self.channel = grpc.insecure_channel(self.address, options=[("grpc.max_receive_message_length", 64 << 20)])
        return self

    def __exit__(self, *exc):
        self.channel.close()
        if stop(self.proc) not in (0, None):
            log(self.proc.stderr.read()[-2000:])

    def status(self, key: str) -> int:
        """VmRSS / VmHWM of the child in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_s(self) -> float:
        """User + system CPU seconds of the child so far (its ended threads included)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset_peak(self) -> bool:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False


def bench_deploy(root: Path, rounds: int) -> dict:
    path, why = starter_model.fetch(log)
    if path is None:
        return {"skipped": why}
    out: dict = {"model": path.name, "file_bytes": path.stat().st_size}
    with Daemon(root, "deploy") as d:
        (d.models / path.name).symlink_to(path)
        node = node_pb2_grpc.NodeStub(d.channel)
        t = time.perf_counter()
        listed = {m.name: m for m in node.ListModels(node_pb2.ListModelsRequest(), metadata=d.md).models}
        out["list_models_s"] = time.perf_counter() - t
        out["quantization"] = listed[path.name].quantization
        for dtype in ("float32", "bfloat16"):
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                events = list(node.Deploy(node_pb2.DeployRequest(
                    model=path.name, dtype=dtype, max_batch=starter_model.DEPLOY_MAX_BATCH,
                    max_context=starter_model.DEPLOY_MAX_CONTEXT), metadata=d.md))
                times.append(time.perf_counter() - t)
                if events[-1].stage != node_pb2.DEPLOY_STAGE_READY:
                    raise SystemExit(f"deploy failed: {events[-1].message}")
                node.Undeploy(node_pb2.UndeployRequest(model=path.name), metadata=d.md)
            out[f"musad_{dtype}_s"] = times
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf, tok = [], []
    for _ in range(max(1, rounds - 1)):
        t = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        hf.append(time.perf_counter() - t)
        del model
        t = time.perf_counter()
        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        tok.append(time.perf_counter() - t)
    out["transformers_float32_s"], out["transformers_tokenizer_s"] = hf, tok
    out["deploy_speedup"] = statistics.median(hf) / statistics.median(out["musad_float32_s"])
    out["deploy_speedup_bf16"] = statistics.median(hf) / statistics.median(out["musad_bfloat16_s"])
    return out


def write_big_model(folder: Path, mib: int, shards: int = 2) -> int:
    import numpy as np

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "bench": True}))
    rng = np.random.default_rng(0)
    for i in range(shards):
        part = mib // shards + (1 if i < mib % shards else 0)
        with open(folder / f"model-{i + 1:05d}-of-{shards:05d}.safetensors", "wb") as fh:
            for _ in range(part // 16):
                fh.write(rng.bytes(16 << 20))
            fh.write(rng.bytes((part % 16) << 20))
    return sum(f.stat().st_size for f in folder.iterdir())


def pull_rounds(root: Path, src: Daemon, dst: Daemon, model: str, rounds: int) -> dict:
    """`rounds` pulls of `model` (each then deleted) and `rounds` cp -r of the same folder."""
    total = sum(f.stat().st_size for f in (src.models / model).iterdir())
    recv = models_pb2_grpc.ModelsStub(dst.channel)
    pulls, peaks, before, cpu_src, cpu_dst = [], [], [], [], []
    for _ in range(rounds):
        before.append(dst.status("VmRSS"))
        peak_reset = dst.reset_peak()
        c_src, c_dst = src.cpu_s(), dst.cpu_s()
        t = time.perf_counter()
        last = None
        for last in recv.PullModel(models_pb2.PullRequest(source=src.address, model=model, token=src.token),
                                   metadata=dst.md):
            pass
        pulls.append(time.perf_counter() - t)
        cpu_src.append(src.cpu_s() - c_src)
        cpu_dst.append(dst.cpu_s() - c_dst)
        if last is None or last.stage != models_pb2.TRANSFER_STAGE_DONE:
            raise SystemExit(f"pull did not finish: {last}")
        peaks.append(dst.status("VmHWM") if peak_reset else 0)
        recv.DeleteModel(models_pb2.DeleteModelRequest(model=model), metadata=dst.md)
    cps, syncs = [], []
    target = root / "cp-target"
    for _ in range(rounds):
        t = time.perf_counter()
        subprocess.run(["cp", "-r", str(src.models / model), str(target)], check=True)
        cps.append(time.perf_counter() - t)
        subprocess.run(["sync", "-f", str(target)], check=True)
        syncs.append(time.perf_counter() - t)
        shutil.rmtree(target)
    warm = pulls[1:] or pulls
    out = {
        "model_bytes": total, "files": len(list((src.models / model).iterdir())),
        "pull_s": pulls, "pull_cold_s": pulls[0], "pull_warm_s_median": statistics.median(warm),
        "pull_warm_mib_s": total / statistics.median(warm) / 2**20,
        "pull_cold_mib_s": total / pulls[0] / 2**20,
        "source_cpu_s": cpu_src, "receiver_cpu_s": cpu_dst,
        "cp_s": cps, "cp_sync_s": syncs, "cp_mib_s": total / statistics.median(cps) / 2**20,
        "cp_sync_mib_s": total / statistics.median(syncs) / 2**20,
        "receiver_rss_before_mib": [b / 2**20 for b in before],
        "receiver_peak_rss_mib": [p / 2**20 for p in peaks],
        "rss_growth_mib": max(p - b for p, b in zip(peaks, before)) / 2**20 if all(peaks) else None,
    }
    out["pull_vs_cp"] = out["pull_warm_mib_s"] / out["cp_mib_s"]
    out["pull_vs_cp_cold"] = out["pull_cold_mib_s"] / out["cp_mib_s"]
    out["pull_vs_cp_sync"] = out["pull_warm_mib_s"] / out["cp_sync_mib_s"]
    return out


LAYOUTS = {"two_shards": 2, "single_file": 1, "four_shards": 4}   # weights files of the same total


def bench_pull(root: Path, mib: int, rounds: int, pull_streams: int = 0) -> dict:
    """The two-shard layout fills the top-level keys (as before); every layout is under `layouts`."""
    models_config = f"pull_streams = {pull_streams}" if pull_streams else ""
    with Daemon(root, "source") as src, Daemon(root, "receiver", models_config) as dst:
        layouts = {}
        for name, shards in LAYOUTS.items():
            write_big_model(src.models / name, mib, shards)
            layouts[name] = pull_rounds(root, src, dst, name, rounds)
            shutil.rmtree(src.models / name)   # one layout on disk at a time
    out = dict(layouts["two_shards"])
    out.update({
        "baseline": "cp -r of the same folder on the same file system (no hashing); cp_sync adds sync -f of the copy",
        "goal": "pull_vs_cp >= 0.5",
        "pull_streams": pull_streams or "node default",
        "layouts": layouts,
        "single_file_mib_s": layouts["single_file"]["pull_warm_mib_s"],
        "single_file_vs_cp": layouts["single_file"]["pull_vs_cp"],
        "four_shard_mib_s": layouts["four_shards"]["pull_warm_mib_s"],
        "four_shard_vs_cp": layouts["four_shards"]["pull_vs_cp"],
    })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--quick", action="store_true", help="2 rounds and a 256 MiB model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pull-mb", type=int, default=1024, help="model size for the pull, MiB")
    ap.add_argument("--skip-deploy", "--pull-only", action="store_true", help="only the pull part")
    ap.add_argument("--pull-streams", type=int, default=0,
                    help="the receiver's models.pull_streams (default: the node's default)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.pull_mb = 2, 256
    result: dict = {"bench": "models", "cpus": os.cpu_count(), "rounds": args.rounds,
                    "load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result["deploy"] = {"skipped": "--skip-deploy"} if args.skip_deploy else bench_deploy(root, args.rounds)
        result["pull"] = bench_pull(root, args.pull_mb, args.rounds, args.pull_streams)
    result["load_average_end"] = os.getloadavg()[0]
    if not args.json:
        d, p = result["deploy"], result["pull"]
        if "skipped" not in d:
            log(f"deploy to READY: musad fp32 {statistics.median(d['musad_float32_s']):.2f} s, bf16 "
                f"{statistics.median(d['musad_bfloat16_s']):.2f} s; transformers fp32 "
                f"{statistics.median(d['transformers_float32_s']):.2f} s -> {d['deploy_speedup']:.1f}x")
        log(f"pull {p['model_bytes'] / 2**20:.0f} MiB: warm {p['pull_warm_mib_s']:.0f} MiB/s, cold "
            f"{p['pull_cold_mib_s']:.0f} MiB/s; cp {p['cp_mib_s']:.0f} MiB/s -> {p['pull_vs_cp']:.2f}; cp+sync "
            f"{p['cp_sync_mib_s']:.0f} MiB/s -> {p['pull_vs_cp_sync']:.2f}; receiver RSS growth "
            f"{p['rss_growth_mib']} MiB; CPU per pull: source {statistics.median(p['source_cpu_s']):.2f} s, "
            f"receiver {statistics.median(p['receiver_cpu_s']):.2f} s")
        log(f"single file {p['single_file_mib_s']:.0f} MiB/s -> {p['single_file_vs_cp']:.2f} of cp; four shards "
            f"{p['four_shard_mib_s']:.0f} MiB/s -> {p['four_shard_vs_cp']:.2f} of cp")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
