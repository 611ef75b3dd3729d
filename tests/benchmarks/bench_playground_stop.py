"""Benchmark: how fast the playground's Stop takes effect (console NodeHub -> musad).

A real musad (demo model, CPU) on a thread, the console's NodeHub with a plain listener.
Each run streams a long generation (ignore_eos), waits for the first tokens, calls
hub.cancel() (what Stop does) and measures
  - stop -> GenerationDone at the console (the RPC ended),
  - stop -> the daemon reports running = 0 and no KV blocks used (the request is freed).
Baseline, measured in the same run: the mean inter-token latency of an uncancelled
generation (one engine step); DESIGN.md promises the blocks are freed within one step.
Prints one JSON object. `--quick` does fewer runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

from musaops.app.core import GenerateSpec, NodeAddress, Sampling
from musaops.app.services.node_hub import NodeHub
from musaops.daemon.config import load_config
from musaops.daemon.demo_model import DEMO_MODEL_NAME, write_demo_model
from musaops.daemon.server import run_server


class _Daemon:
    """run_server on its own loop thread (auth off, CPU, temp state)."""

    def __init__(self, root: Path) -> None:
        models = write_demo_model(root / "models" / DEMO_MODEL_NAME).parent
        self.config = load_config(None, {
            "server.listen": "127.0.0.1:0", "server.metrics_listen": "", "models.dir": str(models),
            "models.device": "cpu", "auth.required": False, "storage.state_dir": str(root / "state")})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cm = run_server(self.config)
        _, self.port, self.ctx = self._call(self.cm.__aenter__())

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def stats(self):
        return self.ctx.deployments.engine_stats()[DEMO_MODEL_NAME]

    def close(self) -> None:
        self._call(self.cm.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class _Listener:
    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()

    def __getattr__(self, name: str):
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args: self.events.put((name, args, time.perf_counter()))

    def wait(self, predicate, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            name, args, t = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if predicate(name, args):
                return args, t


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p * (len(s) - 1))))]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true", help="(always JSON; accepted for make bench)")
    ap.add_argument("--runs", type=int, default=0)
    args = ap.parse_args(argv)
    runs = args.runs or (8 if args.quick else 30)

    with tempfile.TemporaryDirectory() as tmp:
        daemon = _Daemon(Path(tmp))
        listener = _Listener()
        hub = NodeHub(listener)
        hub.start()
        try:
            from musaops.v1 import node_pb2, node_pb2_grpc
            import grpc
            with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as ch:
                for _ in node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(model=DEMO_MODEL_NAME, dtype="float32")):
                    pass
            node_id = hub.add_node(NodeAddress("127.0.0.1", daemon.port))
            listener.wait(lambda n, a: n == "on_status" and a[0].state.value == "online")

            # Baseline: one engine step (mean inter-token latency of an uncancelled request).
            sid = hub.generate(node_id, GenerateSpec(DEMO_MODEL_NAME, prompt="baseline",
                                                     sampling=Sampling(max_tokens=128, ignore_eos=True)))
            (done,), _ = listener.wait(lambda n, a: n == "on_generation_done" and a[0].stream_id == sid)
            step_ms = done.timings.mean_itl_ms

            to_done, to_freed = [], []
            for _ in range(runs):
                sid = hub.generate(node_id, GenerateSpec(DEMO_MODEL_NAME, prompt="a long story",
                                                         sampling=Sampling(max_tokens=4000, ignore_eos=True)))
                listener.wait(lambda n, a: n == "on_tokens" and a[0].stream_id == sid)
                t0 = time.perf_counter()
                hub.cancel(sid)
                (done,), t_done = listener.wait(lambda n, a: n == "on_generation_done" and a[0].stream_id == sid)
                assert done.finish_reason == "cancelled", done
                to_done.append((t_done - t0) * 1000)
                while True:
                    st = daemon.stats()
                    if st.running + st.waiting == 0 and st.kv_blocks_used == 0:
                        to_freed.append((time.perf_counter() - t0) * 1000)
                        break
                    time.sleep(0.0005)
        finally:
            hub.stop()
            daemon.close()

    freed_p50 = _pct(to_freed, 0.5)
    print(json.dumps({
        "bench": "playground_stop",
        "runs": runs,
        "stop_to_generation_done_ms_p50": round(_pct(to_done, 0.5), 3),
        "stop_to_generation_done_ms_p99": round(_pct(to_done, 0.99), 3),
        "stop_to_kv_freed_ms_p50": round(freed_p50, 3),
        "stop_to_kv_freed_ms_p99": round(_pct(to_freed, 0.99), 3),
        "baseline": "one engine step (mean inter-token latency, same run)",
        "baseline_step_ms": round(step_ms, 3),
        "ratio_kv_freed_p50_to_step": round(freed_p50 / step_ms, 3) if step_ms else None,
        "goal": "Stop frees the request within one second (DESIGN: within one engine step)",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
