"""musa-console under a 200-node fleet: GUI latency, chart FPS, CPU, memory, cold start.

Setup: `console_load.py` processes host N small Telemetry + Node.GetInfo servers (synthetic
8-device snapshots at 1 Hz, 900 s of history back-filled like musad's ring): load, not the
thing under test. This process runs the real console: NodeHub thread, Qt bridge, main window
on the Fleet view, plus one Node view (its live charts) shown at the same time.

Measured in one run:
- baseline: the same window with no nodes (event-loop lateness and CPU), the named baseline
- backfill_s: from connecting until every node streams live snapshots
- loop_latency_p50_ms / p99_ms: lateness of a 10 ms precise QTimer on the GUI thread
- chart_fps: redraws per second of the node view's chart panel
- cpu_percent_of_one_core: this process (GUI + hub threads) over the measuring window
- rss_mb_at_1: / rss_mb_at_2: resident memory after `--t1` and `--t2` seconds live (1 and
  10 minutes; --quick: 20 s and 60 s), and their ratio (flat = ~1.0)
- cold_start_s: `musa-console` launch to first painted window (fresh process), and whether
  torch got imported (it must not)
- connect_gui_cpu_s: GUI-thread CPU seconds from connecting the nodes until all are live;
  connect_calls_s: the 200 `connect_address` calls themselves (one GUI turn);
  connect_loop_latency_max_ms / p99_ms: lateness of the 10 ms timer after those calls
  until all are live (outside the goals, so the next person sees what connecting costs)
- gc_connect / gc_live: garbage collections of the whole process (any thread; a collection
  holds the GIL, so it stalls the GUI thread too) while connecting and over the measuring
  window: gen2 count, longest and total pause of any generation

`--json` prints only the JSON object (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

HERE = Path(__file__).resolve().parent
GOALS = {"loop_latency_p99_ms": 16.0, "cpu_percent_of_one_core": 30.0, "cold_start_s": 2.0}


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def start_harness(nodes: int, devices: int, processes: int) -> tuple[list[subprocess.Popen], list[int]]:
    procs, ports = [], []
    per = [nodes // processes + (1 if i < nodes % processes else 0) for i in range(processes)]
    for n in per:
        p = subprocess.Popen([sys.executable, str(HERE / "console_load.py"), "--nodes", str(n),
                              "--devices", str(devices)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
    for p in procs:
        ports += json.loads(p.stdout.readline())["ports"]
    return procs, ports


def stop_harness(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            p.stdin.close()
        except OSError:
            pass
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def cold_start(tmp: str, runs: int = 3) -> dict:
    times, cpu_times, torch_loaded = [], [], False
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "musaops.app.cli", "--first-paint",
                            "--data-dir", tmp], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
        wall = time.perf_counter() - t0
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("first-paint")), "")
        cpu_times.append(float(line.split("cpu=")[1].split()[0]) if "cpu=" in line else float("nan"))
        if not line:
            raise RuntimeError(f"console did not paint: {r.stderr[-2000:]}")
        torch_loaded |= "torch=True" in line
        # Process launch to first paint, measured from outside (includes interpreter start).
        times.append(wall)
    return {"cold_start_s": round(min(times), 3), "cold_start_median_s": round(statistics.median(times), 3),
            "cold_start_cpu_s": round(min(cpu_times), 3), "torch_imported": torch_loaded}


class GcWatch:
    """Counts collections and their pauses through gc.callbacks (every thread's)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []   # (generation, ms)
        self._t0 = 0.0

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._t0) * 1000.0))

    def start(self) -> None:
        import gc
        self.pauses.clear()
        gc.callbacks.append(self._cb)

    def stop(self) -> dict:
        import gc
        if self._cb in gc.callbacks:
            gc.callbacks.remove(self._cb)
        gen2 = [ms for g, ms in self.pauses if g == 2]
        return {"collections": len(self.pauses), "gen2": len(gen2),
                "gen2_max_ms": round(max(gen2, default=0.0), 1), "gen2_total_ms": round(sum(gen2), 1),
                "max_pause_ms": round(max((ms for _, ms in self.pauses), default=0.0), 1),
                "max_ms_by_generation": [round(max((ms for g, ms in self.pauses if g == gen), default=0.0), 1)
                                         for gen in range(3)],
                "total_ms": round(sum(ms for _, ms in self.pauses), 1)}


class LatencyProbe:
    """Lateness of a 10 ms precise timer: how long the GUI thread made it wait."""

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer
        self.samples: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self._last = 0.0

    def start(self) -> None:
        self.samples.clear()
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.samples.append(max(0.0, (now - self._last) * 1000.0 - 10.0))
        self._last = now

    def percentiles(self) -> tuple[float, float]:
        s = sorted(self.samples)
        if not s:
            return float("nan"), float("nan")
        return s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))]


def run(args) -> dict:
    import psutil
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from musaops.app.core import ConnectionState, NodeAddress
    from musaops.app.qt.bridge import HubBridge
    from musaops.app.qt.main_window import MainWindow
    from musaops.app.qt.views.node_view import NodeView
    from musaops.app.services.node_hub import NodeHub

    proc = psutil.Process()
    app = QApplication.instance() or QApplication([])

    def pump(seconds: float) -> None:
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    def thread_cpu() -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in proc.threads()}

    def measure(seconds: float, probe: LatencyProbe) -> dict:
        c0, t0, th0 = proc.cpu_times(), time.perf_counter(), thread_cpu()
        probe.start()
        pump(seconds)
        probe.stop()
        c1, t1, th1 = proc.cpu_times(), time.perf_counter(), thread_cpu()
        p50, p99 = probe.percentiles()
        cpu = 100.0 * ((c1.user - c0.user) + (c1.system - c0.system)) / (t1 - t0)

        def share(tid) -> float:
            return round(100.0 * (th1.get(tid, 0.0) - th0.get(tid, 0.0)) / (t1 - t0), 1)
        hub_tid = hub._thread.native_id if hub._thread else None
        return {"p50": round(p50, 2), "p99": round(p99, 2), "cpu": round(cpu, 1),
                "gui_cpu": share(threading.main_thread().native_id), "hub_cpu": share(hub_tid)}

    bridge = HubBridge()
    hub = NodeHub(bridge)
    hub.start()
    window = MainWindow(hub, bridge, None)
    window.resize(1600, 1000)
    window.show()
    node_view = NodeView(window.state)
    node_view.resize(1400, 900)
    node_view.show()
    node_view.set_active(True)
    probe = LatencyProbe()

    log("baseline: idle console, no nodes")
    pump(1.0)
    if not args.default_gc:   # what musa-console does after its first paint
        from musaops.app.cli import tune_gc
        tune_gc()
    base = measure(args.baseline_s, probe)

    log(f"starting harness: {args.nodes} nodes x {args.devices} devices in {args.processes} processes")
    procs, ports = start_harness(args.nodes, args.devices, args.processes)
    result: dict = {}
    try:
        gcw = GcWatch()
        gcw.start()
        gui_cpu0 = thread_cpu().get(threading.main_thread().native_id, 0.0)
        connect_profiler = None
        if os.environ.get("BENCH_PROFILE_CONNECT"):  # where the GUI thread's connect time goes
            import cProfile
            connect_profiler = cProfile.Profile()
            connect_profiler.enable()
        t_conn = time.perf_counter()
        for port in ports:
            window.connect_address(NodeAddress("127.0.0.1", port))
        node_view.show_node(window.state.order[0])
        connect_calls_s = time.perf_counter() - t_conn
        probe.start()
        state = window.state

        def all_live() -> bool:
            return (len(state.latest) == len(ports)
                    and all(s.state is ConnectionState.ONLINE for s in state.statuses.values())
                    and all(not snap.backfill for snap in state.latest.values()))
        deadline = time.perf_counter() + 300
        while not all_live():
            if time.perf_counter() > deadline:
                raise RuntimeError("nodes did not all come online within 300 s")
            pump(0.25)
        backfill_s = time.perf_counter() - t_conn
        probe.stop()
        connect_gui_cpu = thread_cpu().get(threading.main_thread().native_id, 0.0) - gui_cpu0
        connect_stall = max(probe.samples, default=float("nan"))
        connect_p99 = probe.percentiles()[1]
        gc_connect = gcw.stop()
        if connect_profiler is not None:
            connect_profiler.disable()
            connect_profiler.dump_stats(os.environ["BENCH_PROFILE_CONNECT"])
        log(f"all {len(ports)} nodes live after {backfill_s:.1f} s; measuring")
        t_live = time.perf_counter()

        frames0, tf0 = node_view.panel.frames, time.perf_counter()
        profiler = None
        if os.environ.get("BENCH_PROFILE"):  # where the GUI thread's time goes
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        gcw.start()
        loaded = measure(args.t1 - (time.perf_counter() - t_live), probe)
        gc_live = gcw.stop()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.environ["BENCH_PROFILE"])
        rss1 = proc.memory_info().rss / 2**20
        fps = (node_view.panel.frames - frames0) / (time.perf_counter() - tf0)
        log(f"t1: p99 {loaded['p99']} ms, cpu {loaded['cpu']} %, rss {rss1:.0f} MB, fps {fps:.1f}")
        pump(max(0.0, args.t2 - (time.perf_counter() - t_live)))
        rss2 = proc.memory_info().rss / 2**20
        log(f"t2: rss {rss2:.0f} MB")
        result = {
            "nodes": len(ports), "devices_per_node": args.devices,
            "baseline": "idle console (same window, no nodes)",
            "baseline_loop_latency_p50_ms": base["p50"], "baseline_loop_latency_p99_ms": base["p99"],
            "baseline_cpu_percent": base["cpu"],
            "backfill_s": round(backfill_s, 1),
            "connect_gui_cpu_s": round(connect_gui_cpu, 2),
            "connect_calls_s": round(connect_calls_s, 2),
            "connect_loop_latency_max_ms": round(connect_stall, 1),
            "connect_loop_latency_p99_ms": round(connect_p99, 1),
            "gc_tuned": not args.default_gc, "gc_connect": gc_connect, "gc_live": gc_live,
            "loop_latency_p50_ms": loaded["p50"], "loop_latency_p99_ms": loaded["p99"],
            "loop_latency_p99_vs_baseline": round(loaded["p99"] / base["p99"], 2) if base["p99"] else None,
            "chart_fps": round(fps, 1),
            "chart_timer_fps": round(1000.0 / node_view.panel.timer.interval(), 1),
            "cpu_percent_of_one_core": loaded["cpu"],
            "cpu_percent_gui_thread": loaded["gui_cpu"],
            "cpu_percent_hub_thread": loaded["hub_cpu"],
            f"rss_mb_at_{int(args.t1)}s": round(rss1, 1),
            f"rss_mb_at_{int(args.t2)}s": round(rss2, 1),
            "rss_growth_ratio": round(rss2 / rss1, 3),
        }
    finally:
        node_view.stop()
        window.shutdown()
        hub.stop()
        stop_harness(procs)
    with tempfile.TemporaryDirectory() as tmp:
        result.update(cold_start(tmp))
    result["goals"] = GOALS
    result["meets_goals"] = {
        "loop_latency_p99_ms": result["loop_latency_p99_ms"] < GOALS["loop_latency_p99_ms"],
        "cpu_percent_of_one_core": result["cpu_percent_of_one_core"] < GOALS["cpu_percent_of_one_core"],
        "memory_flat": result["rss_growth_ratio"] < 1.10,
        "cold_start_s": result["cold_start_s"] < GOALS["cold_start_s"],
        "no_torch": not result["torch_imported"],
    }
    result["cpu_count"] = os.cpu_count()
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)  # other work on the machine
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.add_argument("--quick", action="store_true", help="memory at 20 s and 60 s instead of 1 and 10 min")
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--processes", type=int, default=4, help="harness processes")
    p.add_argument("--default-gc", action="store_true",
                   help="keep CPython's GC settings (musa-console tunes them: app/cli.py tune_gc)")
    p.add_argument("--baseline-s", type=float, default=5.0)
    p.add_argument("--t1", type=float, default=None, help="first memory reading, s after live")
    p.add_argument("--t2", type=float, default=None, help="second memory reading, s after live")
    args = p.parse_args()
    args.t1 = args.t1 or (20.0 if args.quick else 60.0)
    args.t2 = args.t2 or (60.0 if args.quick else 600.0)
    result = run(args)
    print(json.dumps(result, indent=None if args.json else 2), flush=True)
    sys.stdout.flush()
    os._exit(0)  # skip Qt teardown at exit (see musaops.app.cli)


if __name__ == "__main__":
    main()
