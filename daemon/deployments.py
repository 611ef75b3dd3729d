"""Deployments: which models are loaded, their state machine, and the Deploy stage stream.

`DeploymentManager` validates a Deploy request against the repository, the devices and the
engine limits, runs the engine's blocking `load_engine(...)` in a worker thread, and turns
its progress callback into a stream of `DeployEvent`s (VALIDATING, LOADING_WEIGHTS,
ALLOCATING_KV_CACHE, WARMING_UP, then READY or FAILED with the reason). States:
pending -> loading -> ready | failed(reason) -> unloading. Each deployment owns the
statistics window its engine's RequestObserver feeds (daemon/model_stats.py); refusals are
`errors.RequestError`s, which the services map onto gRPC status codes; dtype "auto" follows
daemon/dtype_policy.py.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from .config import EngineConfig
from .dtype_policy import auto_dtype
from .engine.api import DTYPES, DeviceTarget, EngineHistogram, EngineSpec, EngineStats, LoadError, RequestMetrics
from .errors import RequestError, Status, no_model, shown
from .model_stats import ModelStatsSample, ModelStatsWindow
from .repository import ModelEntry, ModelRepository

log = logging.getLogger(__name__)

MAX_BATCH_LIMIT = 4096
MAX_CONTEXT_LIMIT = 1 << 20  # tokens per sequence, when the checkpoint does not say


class State(enum.Enum):
    PENDING = "pending"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADING = "unloading"


class Stage(enum.Enum):
    VALIDATING = "validating"
    LOADING_WEIGHTS = "loading_weights"
    ALLOCATING_KV_CACHE = "allocating_kv_cache"
    WARMING_UP = "warming_up"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class DeployRequest:
    model: str
    dtype: str = ""
    device_indices: tuple[int, ...] = ()
    max_batch: int = 0
    max_context: int = 0
    kv_cache_fraction: float = 0.0
    force: bool = False            # deploy even on a device reported unhealthy
    engine: str = ""               # "builtin" ("" too) or "vllm" (daemon/supervised/)
    tensor_parallel_size: int = 0  # vllm: ranks; 0 = one per device given (1 on CPU)
    max_num_batched_tokens: int = 0             # vllm options (supervised/options.py)
    enable_prefix_caching: bool | None = None
    quantization: str = ""
    gpu_memory_utilization: float = 0.0
    max_restarts: int | None = None             # vllm: restarts after a crash; None = engines.vllm.restarts


@dataclass(frozen=True)
class DeployEvent:
    stage: Stage
    done: int = 0
    total: int = 0
    message: str = ""
    elapsed_s: float = 0.0

    @property
    def fraction(self) -> float:
        if self.stage == Stage.READY:
            return 1.0
        return min(1.0, self.done / self.total) if self.total else 0.0


@dataclass
class Deployment:
    """One model's deployment (mutated only on the event loop)."""

    name: str
    entry: ModelEntry
    spec: EngineSpec
    target: DeviceTarget
    state: State = State.PENDING
    reason: str = ""
    engine: Any = None
    ready_unix_ms: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    window: ModelStatsWindow = field(default_factory=ModelStatsWindow)
    engine_kind: str = "builtin"   # which engine serves it: "builtin" or "vllm"
    options: Any = None            # supervised.options.VllmOptions for vllm
    restarts_left: int = 0         # restarts after a crash while READY (supervised engines)

    @property
    def active(self) -> bool:
        return self.state in (State.PENDING, State.LOADING, State.READY, State.UNLOADING)


@dataclass(frozen=True)
class UndeployResult:
    freed_bytes: int
    drained: int
    cancelled: int


def _default_loader(*args, **kwargs):
    try:
        from .engine import load_engine
    except ImportError as exc:
        raise LoadError(f"the inference engine is not available in this build ({exc})") from None
    return load_engine(*args, **kwargs)


def load_outcome(work: asyncio.Future, name: str) -> tuple[Any, str]:
    """A finished load: (engine, "") or (None, why it failed, a sentence).

    The error is read, not re-raised, and its tracebacks are dropped: re-raising it here
    would add the Deploy coroutine's frame to the traceback the future keeps, and that frame
    holds the future (a reference cycle), while the traceback's loader frames hold the
    half-loaded model in their locals. Gigabytes then waited for the garbage collector;
    now the model is freed when the loader returns."""
    exc = work.exception()
    if exc is None:
        return work.result(), ""
    if isinstance(exc, LoadError):
        reason = str(exc)
    else:
        log.error("loading %s failed", name, exc_info=exc)
        reason = f"loading failed unexpectedly: {type(exc).__name__}: {exc}"
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:   # the error, its cause, their causes
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__
    return None, reason


def _log_deploy(dep: "Deployment", seconds: float) -> None:
    """The daemon log's line for a finished Deploy (the audit log has its own record)."""
    where = f"{dep.target.backend}{list(dep.target.indices)}"
    if dep.state == State.READY:
        log.info("deployed %s: engine %s on %s, %s, in %.1f s", dep.name, dep.engine_kind, where,
                 dep.spec.dtype, seconds)
    else:
        log.warning("deploy of %s failed after %.1f s (engine %s on %s): %s", dep.name, seconds,
                    dep.engine_kind, where, dep.reason)


class DeploymentManager:
    """Validates, loads, tracks and unloads models. Call its coroutines on the event loop."""

    def __init__(self, repository: ModelRepository, devices, limits: EngineConfig, supervisor: Any,
                 loader: Callable[..., Any] = _default_loader,
                 on_request: Callable[[str, RequestMetrics], None] | None = None):
        self.repository = repository
        # supervised.supervisor.Supervisor: which engine a Deploy gets, its checked options,
        # and the loader of engines other than the built-in one (passed in: no import upward)
        self.supervisor = supervisor
        self.devices = devices
        self.limits = limits
        self._loader = loader
        self._on_request = on_request
        self._deployments: dict[str, Deployment] = {}
        self._background: set[asyncio.Future] = set()
        self._closed = False
        # Loads get their own threads: hours-long loads must not starve the loop's default
        # executor (ListModels scans, engine closes, token lookups).
        self._load_pool = ThreadPoolExecutor(max_workers=max(1, limits.max_models), thread_name_prefix="musad-load")

    # -- queries ---------------------------------------------------------------------------

    def get(self, name: str) -> Deployment | None:
        return self._deployments.get(name)

    def all(self) -> list[Deployment]:
        return list(self._deployments.values())

    def engine_for(self, name: str):
        """The READY engine serving `name`, else RequestError (INVALID_ARGUMENT / NOT_FOUND /
        FAILED_PRECONDITION)."""
        dep = self._deployments.get(name)
        if dep is None or dep.state != State.READY:
            if dep is None and (not name or self.repository.get(name) is None):
                # inference callers (client keys included) learn nothing of the node's folders
                raise no_model(name)
            state = dep.state.value if dep else "not deployed"
            raise RequestError(Status.FAILED_PRECONDITION,
                               f"Model {shown(name)} is {state}; deploy it and wait for READY first.")
        return dep.engine

    def _check_known(self, name: str) -> ModelEntry:
        """The repository entry of `name`, else RequestError (INVALID_ARGUMENT / NOT_FOUND)."""
        if not name:
            raise RequestError(Status.INVALID_ARGUMENT, "Say which model: `model` is empty.")
        entry = self.repository.get(name)
        if entry is None:
            problem = self.repository.problem()
            raise RequestError(Status.NOT_FOUND,
                               f"There is no model named {shown(name)} in the repository {self.repository.root}"
                               + (f" ({problem})." if problem else "."))
        return entry

    def engine_stats(self) -> dict[str, EngineStats]:
        """READY engines' counters (any thread; cheap)."""
        return self._read_ready("stats")

    def engine_histograms(self) -> dict[str, tuple[EngineHistogram, ...]]:
        """READY engines' own latency histograms (any thread; cheap); engines that measure
        none (the built-in one, whose latencies musad measures itself) are left out."""
        return self._read_ready("histograms")

    def _read_ready(self, method: str) -> dict[str, Any]:
        out = {}
        for dep in list(self._deployments.values()):
            read = getattr(dep.engine, method, None)
            if read is not None and dep.state == State.READY:
                try:
                    out[dep.name] = read()
                except Exception:  # noqa: BLE001
                    log.exception("%s() of %s failed", method, dep.name)
        return out

    def stats(self) -> list[ModelStatsSample]:
        """Per READY model: counters, token rates over ~2 s, latency percentiles (any thread)."""
        out = []
        for name, st in self.engine_stats().items():
            dep = self._deployments.get(name)
            if dep is not None:
                out.append(dep.window.sample(name, st))
        return out

    # -- deploy ----------------------------------------------------------------------------

    def validate(self, req: DeployRequest) -> tuple[ModelEntry, EngineSpec, DeviceTarget]:
        """Checks a Deploy request; raises RequestError with the status and a sentence."""
        bad = Status.INVALID_ARGUMENT
        if self._closed:
            raise RequestError(Status.UNAVAILABLE, "The daemon is shutting down; try another node.")
        entry = self._check_known(req.model)
        if not entry.ok:
            raise RequestError(Status.FAILED_PRECONDITION,
                               f"Model {shown(req.model)} cannot be deployed: {entry.error}")
        backend = self.devices.backend
        dtype = req.dtype.lower()
        if dtype in ("", "auto"):
            infos = self.devices.info()
            dtype = auto_dtype(backend, entry.torch_dtype, infos[0].capability if infos else "")
        if dtype not in DTYPES:
            raise RequestError(bad, f"dtype {shown(req.dtype)} is not supported; use one of {', '.join(DTYPES)} or auto.")
        count = len(self.devices.info())
        indices = tuple(req.device_indices) or (0,)
        if len(indices) > count:
            raise RequestError(bad, f"device_indices names {len(indices)} devices; this node has {count} "
                                    f"{backend} device(s).")
        for i in indices:
            if not 0 <= i < count:
                raise RequestError(bad, f"There is no device with index {i}: this node has {count} "
                                        f"{backend} device(s) (valid indices 0..{count - 1}).")
        if len(set(indices)) != len(indices):
            raise RequestError(bad, f"device_indices {list(indices)} names a device twice; list each device once.")
        if not req.force:  # a fresh reading: an ECC error may have appeared since the last tick
            for sample in self.devices.sample():
                if sample.index in indices and sample.healthy is False:
                    raise RequestError(Status.FAILED_PRECONDITION,
                                       f"Device {sample.index} is unhealthy ({sample.health_reason}); deploy on "
                                       "another device, or set force to deploy on it anyway.")
        fraction = req.kv_cache_fraction or self.limits.default_kv_cache_fraction
        if not 0 < fraction <= 0.95:  # also refuses NaN and infinities
            raise RequestError(bad, f"kv_cache_fraction {req.kv_cache_fraction} is outside (0, 0.95].")
        max_batch = req.max_batch or self.limits.default_max_batch
        if max_batch > MAX_BATCH_LIMIT:
            raise RequestError(bad, f"max_batch {max_batch} is above the limit of {MAX_BATCH_LIMIT}.")
        model_max = entry.max_position_embeddings
        max_context = req.max_context or model_max or 4096
        if model_max and max_context > model_max:
            raise RequestError(bad, f"max_context {max_context} is above the model's "
                                    f"max_position_embeddings of {model_max}.")
        if max_context < 2:
            raise RequestError(bad, f"max_context {max_context} leaves no room for output; a sequence needs at "
                                    "least 2 tokens (a prompt token and an output token).")
        if max_context > MAX_CONTEXT_LIMIT:
            raise RequestError(bad, f"max_context {max_context} is above the limit of {MAX_CONTEXT_LIMIT} tokens.")
        existing = self._deployments.get(req.model)
        if existing is not None and existing.active:
            raise RequestError(Status.ALREADY_EXISTS,
                               f"Model {shown(req.model)} is already deployed ({existing.state.value}); undeploy it first.")
        active = sum(d.active for d in self._deployments.values())
        if active >= self.limits.max_models:
            raise RequestError(Status.RESOURCE_EXHAUSTED,
                               f"This node already serves {active} models, its limit (engine.max_models); "
                               "undeploy one and retry.")
        spec = EngineSpec(dtype=dtype, max_batch=max_batch, max_context=max_context,
                          kv_cache_fraction=fraction, max_queue=self.limits.max_queue,
                          kv_block_size=self.limits.kv_block_size,
                          prefill_token_budget=self.limits.prefill_token_budget,
                          prefix_caching=self.limits.prefix_caching,
                          template_timeout_s=self.limits.template_timeout_s,
                          stream_backlog_tokens=self.limits.stream_backlog_tokens)
        return entry, spec, DeviceTarget(self.devices.torch_device_type, indices)

    async def deploy(self, req: DeployRequest) -> AsyncIterator[DeployEvent]:
        """Validates (raising RequestError before the first event) and loads, streaming stages.

        Closing the iterator early (the client cancelled), even at the first event, sets the
        loader's cancel event; the model returns to the repository once the loader has stopped."""
        start = time.monotonic()
        try:
            if req.model and not self._closed:  # read the folder's headers off the loop; validate hits the cache
                await asyncio.to_thread(self.repository.get, req.model)
            entry, spec, target = self.validate(req)
            kind, options = await self._engine_choice(req, target)
            entry, spec, target = self.validate(req)  # again: another Deploy may have begun meanwhile
        except RequestError as exc:
            log.info("deploy of %s refused (%s): %s", shown(req.model), exc.code.value, exc.message)
            raise
        dep = Deployment(entry.name, entry, spec, target, engine_kind=kind, options=options)
        self._deployments[entry.name] = dep
        loop = asyncio.get_running_loop()
        loader = self._loader
        if options is not None:
            dep.restarts_left = options.max_restarts
            loader = self.supervisor.loader(entry.name, options, on_crash=lambda reason: loop.call_soon_threadsafe(
                self._crashed, dep, reason))
        events: asyncio.Queue[DeployEvent] = asyncio.Queue()

        def progress(stage: str, done: int, total: int, message: str = "") -> None:
            try:
                st = Stage(stage)
            except ValueError:
                return
            ev = DeployEvent(st, int(done), int(total), message, time.monotonic() - start)
            loop.call_soon_threadsafe(events.put_nowait, ev)

        def observe(m: RequestMetrics) -> None:
            dep.window.add(m)
            if self._on_request is not None:
                self._on_request(dep.name, m)

        work: asyncio.Future | None = None
        finished = False
        getter: asyncio.Future | None = None
        try:
            yield DeployEvent(Stage.VALIDATING, 1, 1, f"{entry.name}: {spec.dtype} on {target.backend}"
                                                      f"{list(target.indices)}", time.monotonic() - start)
            dep.state = State.LOADING
            work = loop.run_in_executor(self._load_pool, lambda: loader(
                entry.path, spec, target, progress=progress, observer=observe, cancel=dep.cancel))
            while True:
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                while not events.empty():
                    yield events.get_nowait()
                break
            finished = True  # from here on the loader has stopped; nothing is left to reap
            dep.engine, failure = load_outcome(work, entry.name)
            work = None
            if failure:
                dep.state, dep.reason = State.FAILED, self._abandoned_reason(failure)
            else:
                if dep.cancel.is_set() or self._closed:
                    engine, dep.engine = dep.engine, None
                    dep.state, dep.reason = State.FAILED, self._abandoned_reason("the deploy was cancelled")
                    await asyncio.shield(self.track(asyncio.to_thread(engine.close)))
                else:
                    dep.state, dep.ready_unix_ms = State.READY, int(time.time() * 1000)
            _log_deploy(dep, time.monotonic() - start)
            if dep.state == State.READY:
                yield DeployEvent(Stage.READY, 1, 1, f"{entry.name} is ready", time.monotonic() - start)
            else:
                yield DeployEvent(Stage.FAILED, 0, 0, dep.reason, time.monotonic() - start)
        finally:
            if getter is not None:
                getter.cancel()
            if not finished:  # the client went away (or the daemon is stopping): abort loading
                dep.cancel.set()
                self.track(self._reap_cancelled(dep, work))

    async def _engine_choice(self, req: DeployRequest, target: DeviceTarget) -> tuple[str, Any]:
        """("builtin", None) or ("vllm", VllmOptions); RequestError when the choice is refused
        (the built-in engine on several devices, an engine not installed, an option out of range)."""
        if (req.engine or "builtin") == "builtin":
            return self.supervisor.choose(req, self.devices.backend, target.indices)
        # the first vllm Deploy runs the configured interpreter once (package metadata)
        return await asyncio.to_thread(self.supervisor.choose, req, self.devices.backend, target.indices)

    def _crashed(self, dep: Deployment, reason: str) -> None:
        """A supervised engine's child exited while READY (on the loop): FAILED with the
        reason, then restarted while the deployment has restarts left."""
        if self._deployments.get(dep.name) is not dep or dep.state != State.READY:
            return
        dep.state, dep.reason = State.FAILED, reason
        if dep.restarts_left > 0 and not self._closed:
            dep.restarts_left -= 1
            self.track(self._restart(dep))

    async def _restart(self, dep: Deployment) -> None:
        engine = dep.engine
        dep.state = State.LOADING
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._load_pool, lambda: engine.restart(cancel=dep.cancel))
        except LoadError as exc:
            dep.state, dep.reason = State.FAILED, f"{dep.reason}\nThe restart failed too: {exc}"
            return
        if self._closed or self._deployments.get(dep.name) is not dep:
            await asyncio.to_thread(engine.close)
            return
        dep.state, dep.reason, dep.ready_unix_ms = State.READY, "", int(time.time() * 1000)
        log.warning("%s: the engine was restarted after a crash", dep.name)

    def _abandoned_reason(self, reason: str) -> str:
        return "the daemon is shutting down; the deploy was abandoned" if self._closed else reason

    def track(self, aw) -> asyncio.Future:
        """Runs `aw` as a background task that close() waits for (call on the event loop)."""
        fut = asyncio.ensure_future(aw)
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)
        return fut

    async def _reap_cancelled(self, dep: Deployment, work: asyncio.Future | None) -> None:
        engine = None
        if work is not None:   # a cancelled load may end in any way
            await asyncio.wait([work])
            engine, _failure = load_outcome(work, dep.name)
            work = None
        if engine is not None:
            await asyncio.to_thread(engine.close)
        if self._deployments.get(dep.name) is dep:
            del self._deployments[dep.name]
        log.info("deploy of %s cancelled", dep.name)

    def abort_loads(self) -> None:
        """Shutdown begins: refuse new Deploys and cancel loads in progress (they end FAILED)."""
        self._closed = True
        for dep in self._deployments.values():
            if dep.state in (State.PENDING, State.LOADING):
                dep.cancel.set()

    # -- undeploy --------------------------------------------------------------------------

    async def undeploy(self, name: str, cancel: bool = False, drain_timeout_s: float = 30.0) -> UndeployResult:
        """Drains (or cancels) and closes a READY model. The unload runs to its end even when
        the caller goes away midway, so a model is never left UNLOADING."""
        dep = self._deployments.get(name)
        if dep is None:
            self._check_known(name)
            raise RequestError(Status.FAILED_PRECONDITION, f"Model {shown(name)} is not deployed.")
        if dep.state == State.FAILED:
            del self._deployments[name]
            engine, dep.engine = dep.engine, None
            if engine is not None:  # a supervised engine whose child crashed: stop its scraper
                await asyncio.to_thread(engine.close)
            return UndeployResult(0, 0, 0)
        if dep.state != State.READY:
            raise RequestError(Status.FAILED_PRECONDITION,
                               f"Model {shown(name)} is {dep.state.value}; cancel its Deploy call or wait for READY.")
        dep.state = State.UNLOADING
        return await asyncio.shield(self.track(self._unload(dep, 0.0 if cancel else drain_timeout_s)))

    async def _unload(self, dep: Deployment, timeout_s: float) -> UndeployResult:
        engine = dep.engine
        drained = cancelled = 0
        try:
            drained, cancelled = await engine.drain(timeout_s)
        except Exception:  # noqa: BLE001
            log.exception("drain of %s failed", dep.name)
        info = engine.info
        try:
            await asyncio.to_thread(engine.close)
        finally:
            dep.engine = None
            if self._deployments.get(dep.name) is dep:
                del self._deployments[dep.name]
        log.info("undeployed %s: %d requests finished while draining, %d cancelled", dep.name, drained, cancelled)
        return UndeployResult(int(info.weights_bytes + info.kv_cache_bytes), int(drained), int(cancelled))

    async def close(self, drain_timeout_s: float = 0.0) -> None:
        """Shutdown: abort loads, drain (up to the timeout) and close every engine, and wait
        for unloads and reaps already under way (their drains cut short)."""
        self.abort_loads()
        for dep in list(self._deployments.values()):
            dep.cancel.set()
        for d in self._deployments.values():
            if d.state == State.FAILED and d.engine is not None:  # a crashed child's engine
                engine, d.engine = d.engine, None
                self.track(asyncio.to_thread(engine.close))
        ready = [d for d in self._deployments.values() if d.state == State.READY]
        for d in ready:
            d.state = State.UNLOADING
            self.track(self._unload(d, drain_timeout_s))
        # an Undeploy in progress may be draining with a long timeout: cancel what it waits for
        unloading = [d.engine for d in self._deployments.values()
                     if d.state == State.UNLOADING and d not in ready and d.engine is not None]
        await asyncio.gather(*(e.drain(0.0) for e in unloading), return_exceptions=True)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        self._load_pool.shutdown(wait=False)  # every load has ended: its threads exit now
