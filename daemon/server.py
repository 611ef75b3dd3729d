"""Assembles musad's grpc.aio server: parts, interceptors, servicers, health, reflection.

`run_server(config)` is an async context manager yielding `(server, port, ctx)`; leaving it
shuts down in order: health NOT_SERVING, telemetry streams ended, new RPCs refused, in-flight
RPCs given up to `server.grace_seconds`, then engines, metrics, devices and the audit log
closed. The security wiring extends `_interceptors` and `_server_credentials`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import socket
from typing import Any, AsyncIterator, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from musaops.v1 import audit_pb2_grpc, inference_pb2_grpc, keys_pb2_grpc, models_pb2_grpc, node_pb2_grpc

from .config import Config, parse_hostport
from .context import DaemonContext
from .deployments import DeploymentManager
from .supervised.supervisor import Supervisor
from .metrics import DaemonMetrics
from .repository import ModelRepository
from .services import telemetry as telemetry_service
from .services.audit import AuditServicer
from .services.inference import InferenceServicer
from .services.keys import KeysServicer, KeyUsageServicer
from .services.models import ModelsServicer
from .services.node import NodeServicer
from .services.telemetry_encode import encode_snapshot
from .telemetry import TelemetrySampler
from .http.serve import HttpFrontDoor
from .inference_core import InferenceCore
from .limits import NO_LIMITS, KeyLimits
from .trust.audit import AuditLog, record_config_if_changed
from .usage import UsageCollector, UsageLog
from .engine import workers
from .watchdog import Watchdog

log = logging.getLogger(__name__)

# Every servicer: the generated add function, how it is built from the context, its full name.
_SERVICES: tuple[tuple[Callable[[Any, grpc.aio.Server], None], Callable[[DaemonContext], Any], str], ...] = (
    (node_pb2_grpc.add_NodeServicer_to_server, NodeServicer, "musaops.v1.Node"),
    (telemetry_service.add_to_server, telemetry_service.TelemetryServicer, "musaops.v1.Telemetry"),
    (inference_pb2_grpc.add_InferenceServicer_to_server, InferenceServicer, "musaops.v1.Inference"),
    (audit_pb2_grpc.add_AuditServicer_to_server, lambda ctx: AuditServicer(ctx.audit), "musaops.v1.Audit"),
    (keys_pb2_grpc.add_KeysServicer_to_server, KeysServicer, "musaops.v1.Keys"),
    (keys_pb2_grpc.add_KeyUsageServicer_to_server, KeyUsageServicer, "musaops.v1.KeyUsage"),
    (models_pb2_grpc.add_ModelsServicer_to_server, ModelsServicer, "musaops.v1.Models"),
)
SERVICE_NAMES = tuple(name for _, _, name in _SERVICES)
_MAX_MESSAGE = 64 * 1024 * 1024


class StartupError(RuntimeError):
    """The daemon cannot start; the message says why and what to change."""


class PortInUseError(OSError):
    """The listen address cannot be bound (the message says which and why)."""


def _interceptors(ctx: DaemonContext) -> list[grpc.aio.ServerInterceptor]:
    """Server interceptors, outermost first (the security wiring adds auth here); the
    malformed-request check is innermost, so only admitted callers reach it."""
    from .trust.auth import security_interceptors
    from .malformed import MalformedRequestInterceptor

    return [*security_interceptors(ctx), MalformedRequestInterceptor()]


def _server_credentials(ctx: DaemonContext) -> grpc.ServerCredentials | None:
    """TLS/mTLS credentials for the gRPC port, or None for plaintext (security wiring)."""
    from .trust.tls import server_credentials

    try:
        return server_credentials(ctx.config)
    except (OSError, ValueError) as exc:   # unreadable or unusable certificate, key or CA: exit 2
        raise StartupError(str(exc)) from None


def _register_services(server: grpc.aio.Server, ctx: DaemonContext) -> list[str]:
    for add, make, _ in _SERVICES:
        add(make(ctx), server)
    return list(SERVICE_NAMES)


def build_context(config: Config, *, devices: Any = None, loader: Callable[..., Any] | None = None) -> DaemonContext:
    """The node's parts, ready but not started (no threads, no ports)."""
    if devices is not None:
        return _build_context(config, devices, loader)
    from .devices import detect

    devices = detect(config.models.device)
    try:
        return _build_context(config, devices, loader)
    except BaseException:
        devices.close()  # detected here: release the vendor library before the error propagates
        raise


def _build_context(config: Config, devices: Any, loader: Callable[..., Any] | None) -> DaemonContext:
    hostname = socket.gethostname()
    try:
        pathlib.Path(config.storage.state_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"Cannot create the state folder {config.storage.state_dir}: "
                           f"{exc.strerror or exc}. Set --state-dir or storage.state_dir.") from None
    repository = ModelRepository(config.models.dir)
    holder: dict[str, Any] = {}
    metrics = DaemonMetrics(
        device_names=lambda: {d.index: d.name for d in devices.info()},
        device_samples=lambda: _latest_devices(holder.get("telemetry")),
        engine_stats=lambda: holder["deployments"].engine_stats(),
        engine_histograms=lambda: holder["deployments"].engine_histograms(),
    )
    kwargs = {"loader": loader} if loader is not None else {}
    supervisor = Supervisor(config.engines.vllm, config.storage.state_dir)
    supervisor.reap()  # children an earlier musad (killed -9) left behind
    deployments = DeploymentManager(repository, devices, config.engine, supervisor,
                                    on_request=metrics.observe_request, **kwargs)
    telemetry = TelemetrySampler(devices, deployments.stats, encode_snapshot,
                                 history_seconds=config.telemetry.history_seconds)
    holder.update(telemetry=telemetry, deployments=deployments)
    ctx = DaemonContext(config=config, devices=devices, repository=repository, deployments=deployments,
                        telemetry=telemetry, metrics=metrics,
                        audit=AuditLog.open(config.storage.db_url, node=hostname),
                        hostname=hostname)
    ctx.usage = UsageLog(ctx.audit.engine)
    metrics.registry.register(UsageCollector(ctx.usage.totals))
    ctx.inference = InferenceCore(ctx, ctx.usage, limits_of=lambda actor: _key_limits(ctx, actor))
    return ctx


def _key_limits(ctx: DaemonContext, actor: str) -> KeyLimits:
    """The limits stored with the caller's token (none for a certificate without one, or
    when auth is off and the caller sent no token)."""
    if ctx.auth is None:
        return NO_LIMITS
    info = ctx.auth.identity(actor, refresh=False)
    return info.limits if info is not None else NO_LIMITS


def _latest_devices(telemetry: TelemetrySampler | None) -> list:
    """Device samples for a /metrics scrape: the sampler's latest (at most ~1 s old)."""
    latest = telemetry.latest if telemetry is not None else None
    return list(latest.reading.devices) if latest is not None else []


@contextlib.asynccontextmanager
async def run_server(config: Config, *, devices: Any = None,
                     loader: Callable[..., Any] | None = None) -> AsyncIterator[tuple[grpc.aio.Server, int, DaemonContext]]:
    """Starts musad on config.server.listen; yields (server, bound port, ctx); stops on exit.

    Raises PortInUseError when the gRPC or metrics address cannot be bound."""
    ctx = build_context(config, devices=devices, loader=loader)
    server = None
    try:
        server = grpc.aio.server(
            interceptors=_interceptors(ctx),
            options=[("grpc.max_receive_message_length", _MAX_MESSAGE),
                     ("grpc.max_send_message_length", _MAX_MESSAGE),
                     ("grpc.so_reuseport", 0)],
        )
        names = _register_services(server, ctx)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
        port = _bind(server, ctx)
        if config.server.metrics_listen:
            host, mport = parse_hostport(config.server.metrics_listen)
            try:
                ctx.metrics.serve(host, mport)
            except OSError as exc:
                raise PortInUseError(f"Cannot serve /metrics on {config.server.metrics_listen}: {exc.strerror or exc}. "
                                     "Is another musad running? Use --metrics-listen to pick another address.") from None
        if config.server.http_listen:
            ctx.http = HttpFrontDoor()
            try:
                ctx.http.start(ctx)
            except PermissionError:
                raise
            except OSError as exc:
                raise PortInUseError(f"Cannot serve HTTP on {config.server.http_listen}: {exc.strerror or exc}. "
                                     "Is another musad running? Use --http-listen to pick another address.") from None
        await server.start()
        if ctx.http is not None:
            await ctx.http.started()
            log.info("OpenAI-compatible HTTP serving on port %d (%s)", ctx.http.port, "TLS" if ctx.http.tls else "plaintext")
        ctx.telemetry.start()
        # audited only now that it serves: a start that failed (port in use) changed nothing
        await asyncio.to_thread(record_config_if_changed, ctx.audit, ctx.config)
        for name in ("", *names):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        watchdog = Watchdog(health, ["", *names], {"default": lambda: None, "request": workers.pool})
        watchdog.start()   # NOT_SERVING while the loop or a thread pool is jammed (watchdog.py)
        log.info("musad serving on port %d (%s backend, models in %s)", port, ctx.devices.backend, config.models.dir)
        if problem := ctx.repository.problem():  # the folder may be mounted or filled later
            log.warning("model repository %s: %s; ListModels is empty until it is fixed",
                        config.models.dir, problem)
    except BaseException:
        if server is not None:
            await server.stop(None)  # a no-op unless it had started
        if ctx.http is not None:
            await ctx.http.stop()
        await _close_parts(ctx)
        raise
    try:
        yield server, port, ctx
    finally:
        await watchdog.stop()
        await shutdown(server, ctx, health)


def _bind(server: grpc.aio.Server, ctx: DaemonContext) -> int:
    listen = ctx.config.server.listen
    host, want = parse_hostport(listen)
    creds = _server_credentials(ctx)
    ctx.tls = creds is not None
    address = f"[{host}]:{want}" if ":" in host else f"{host}:{want}"
    try:
        port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    except RuntimeError:   # grpc's text only advises GRPC_VERBOSITY: say why in musad's words
        port = 0
    if port == 0:
        raise PortInUseError(f"Cannot listen on {listen}: {_bind_problem(host, want)}. "
                             "Use --listen to pick another address.")
    return port


def _bind_problem(host: str, port: int) -> str:
    """Why `host:port` cannot be bound, from a plain socket's try (grpc core does not say)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"the host name cannot be resolved ({exc.strerror or exc})"
    family, kind, proto, _, sockaddr = infos[0]
    try:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(sockaddr)
    except OSError as exc:
        return f"{(exc.strerror or str(exc)).lower()} (is another musad running?)"
    return "the address is in use or not available on this host"


async def shutdown(server: grpc.aio.Server, ctx: DaemonContext, health: HealthServicer) -> None:
    """Graceful stop: see the module docstring."""
    ctx.shutting_down.set()
    await health.enter_graceful_shutdown()
    ctx.deployments.abort_loads()  # a load in progress ends FAILED now instead of holding the drain
    ctx.telemetry.close()  # infinite streams end now instead of holding the drain
    log.info("draining: in-flight RPCs have %.0f s", ctx.config.server.grace_seconds)
    try:
        await asyncio.gather(server.stop(ctx.config.server.grace_seconds),
                             *([ctx.http.stop()] if ctx.http is not None else []))
        if ctx.inference is not None:
            await ctx.inference.wait_recorded()
    finally:  # the engines, ports and database are released whatever happened above
        await _close_parts(ctx)
    log.info("musad stopped")


async def _close_parts(ctx: DaemonContext) -> None:
    for name, close in (("telemetry", ctx.telemetry.close), ("metrics", ctx.metrics.close)):
        try:
            close()
        except Exception:  # noqa: BLE001
            log.exception("closing %s failed", name)
    try:
        await ctx.deployments.close()
    except Exception:  # noqa: BLE001
        log.exception("closing deployments failed")
    if ctx.deployments.supervisor is not None:
        # every child was stopped above; a group still listed (a load the shutdown overtook,
        # a child whose helpers outlived it) is killed now rather than left to the next start
        await asyncio.to_thread(ctx.deployments.supervisor.reap)
    if ctx.inference is not None:   # requests the engines' close ended are recorded first
        await ctx.inference.wait_recorded()
    for name, close in (("devices", ctx.devices.close), ("usage", ctx.usage.close if ctx.usage else None),
                        ("audit", ctx.audit.close)):
        if close is None:
            continue
        try:
            close()
        except Exception:  # noqa: BLE001
            log.exception("closing %s failed", name)
