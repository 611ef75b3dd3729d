"""Node service: GetInfo, ListModels, Deploy (stage stream) and Undeploy.

Thin: the repository, the DeploymentManager and the devices do the work; this module maps
their results and RequestErrors onto protobuf messages and gRPC status codes, and records
every control action in the audit log before reporting success.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import socket
from importlib import metadata

import grpc
import psutil

from musaops.v1 import common_pb2, node_pb2, node_pb2_grpc

from .. import __version__
from ..context import DaemonContext
from ..deployments import Deployment, DeployRequest, Stage, State
from ..dtype_policy import auto_dtype_table
from ..errors import RequestError
from ..repository import ModelEntry
from .status import abort

log = logging.getLogger(__name__)

BACKEND_PB = {"musa": common_pb2.BACKEND_MUSA, "cuda": common_pb2.BACKEND_CUDA, "cpu": common_pb2.BACKEND_CPU}
_STATE_PB = {
    State.PENDING: common_pb2.MODEL_STATE_PENDING, State.LOADING: common_pb2.MODEL_STATE_LOADING,
    State.READY: common_pb2.MODEL_STATE_READY, State.FAILED: common_pb2.MODEL_STATE_FAILED,
    State.UNLOADING: common_pb2.MODEL_STATE_UNLOADING,
}
_STAGE_PB = {
    Stage.VALIDATING: node_pb2.DEPLOY_STAGE_VALIDATING, Stage.LOADING_WEIGHTS: node_pb2.DEPLOY_STAGE_LOADING_WEIGHTS,
    Stage.ALLOCATING_KV_CACHE: node_pb2.DEPLOY_STAGE_ALLOCATING_KV_CACHE,
    Stage.WARMING_UP: node_pb2.DEPLOY_STAGE_WARMING_UP, Stage.READY: node_pb2.DEPLOY_STAGE_READY,
    Stage.FAILED: node_pb2.DEPLOY_STAGE_FAILED,
}


def _torch_version() -> str:
    try:
        return metadata.version("torch")  # without importing torch into the daemon
    except metadata.PackageNotFoundError:
        return ""


def device_info_pb(d) -> common_pb2.DeviceInfo:
    return common_pb2.DeviceInfo(
        index=d.index, name=d.name, uuid=d.uuid or "", backend=BACKEND_PB.get(d.backend, 0),
        memory_total_bytes=d.memory_total_bytes or 0, capability=d.capability or "",
        driver_version=d.driver_version or "", pci_bus_id=d.pci_bus_id or "")


def model_info_pb(entry: ModelEntry, dep: Deployment | None) -> node_pb2.ModelInfo:
    msg = node_pb2.ModelInfo(
        name=entry.name, architecture=entry.architecture, parameters=entry.parameters,
        size_bytes=entry.size_bytes, max_position_embeddings=entry.max_position_embeddings,
        torch_dtype=entry.torch_dtype, num_layers=entry.num_layers, hidden_size=entry.hidden_size,
        vocab_size=entry.vocab_size, quantization=entry.quantization, notice=entry.notice,
        memory_estimates=[node_pb2.MemoryEstimate(dtype=e.dtype, weights_bytes=e.weights_bytes,
                                                  kv_bytes_per_token=e.kv_bytes_per_token,
                                                  total_bytes=e.total_bytes) for e in entry.estimates],
    )
    if not entry.ok:
        msg.state, msg.reason = common_pb2.MODEL_STATE_ERROR, entry.error
    elif dep is None:
        msg.state = common_pb2.MODEL_STATE_AVAILABLE
    else:
        msg.state, msg.reason = _STATE_PB[dep.state], dep.reason
        if dep.active:
            d = msg.deployment
            d.dtype, d.max_batch, d.max_context = dep.spec.dtype, dep.spec.max_batch, dep.spec.max_context
            d.device_indices.extend(dep.target.indices)
            d.kv_block_size, d.ready_unix_ms = dep.spec.kv_block_size, dep.ready_unix_ms
            d.engine = dep.engine_kind
            d.tensor_parallel_size = dep.options.tensor_parallel_size if dep.options is not None else 1
            d.restarts, d.pid = getattr(dep.engine, "restarts", 0), getattr(dep.engine, "pid", 0)
            d.max_restarts = dep.options.max_restarts if dep.options is not None else 0
            info = getattr(dep.engine, "info", None)
            if info is not None:
                d.max_batch, d.max_context = info.max_batch, info.max_context
                d.weights_bytes, d.kv_cache_bytes = info.weights_bytes, info.kv_cache_bytes
                d.kv_block_size, d.kv_blocks_total = info.kv_block_size, info.kv_blocks_total
    return msg


def engine_options(request: node_pb2.DeployRequest) -> dict:
    """DeployRequest.engine_options and max_restarts -> deployments.DeployRequest's keyword arguments."""
    o = request.engine_options
    return {"max_num_batched_tokens": o.max_num_batched_tokens, "quantization": o.quantization,
            "gpu_memory_utilization": round(o.gpu_memory_utilization, 4),
            "enable_prefix_caching": o.enable_prefix_caching if o.HasField("enable_prefix_caching") else None,
            "max_restarts": request.max_restarts if request.HasField("max_restarts") else None}


class NodeServicer(node_pb2_grpc.NodeServicer):
    def __init__(self, ctx: DaemonContext):
        self.ctx = ctx
        self._static_info: node_pb2.GetInfoResponse | None = None

    def _info(self) -> node_pb2.GetInfoResponse:
        if self._static_info is None:  # nothing in it changes while the daemon runs
            ctx, lim = self.ctx, self.ctx.config.engine
            self._static_info = node_pb2.GetInfoResponse(
                hostname=ctx.hostname or socket.gethostname(), version=__version__, api_version="v1",
                backend=BACKEND_PB.get(ctx.devices.backend, 0),
                devices=[device_info_pb(d) for d in ctx.devices.info()],
                limits=node_pb2.EngineLimits(
                    max_models=lim.max_models, max_queue=lim.max_queue, max_tokens=lim.max_tokens,
                    max_stop_strings=lim.max_stop_strings, default_max_batch=lim.default_max_batch,
                    default_kv_cache_fraction=lim.default_kv_cache_fraction),
                torch_version=_torch_version(), python_version=platform.python_version(),
                started_unix_ms=int(ctx.started_at * 1000),
                host_memory_total_bytes=psutil.virtual_memory().total,
                host_cpu_count=psutil.cpu_count() or 0,
                tls=ctx.tls, auth_required=ctx.config.auth.required,
                auto_dtype=self._auto_dtype(),
                http_address=ctx.http.address if ctx.http is not None else "",
            )
        return self._static_info

    def _auto_dtype(self) -> dict[str, str]:
        """What dtype "auto" deploys each checkpoint dtype as here (the rule Deploy applies:
        the backend and device 0's capability)."""
        infos = self.ctx.devices.info()
        return auto_dtype_table(self.ctx.devices.backend, infos[0].capability if infos else "")

    async def GetInfo(self, request, context):
        info = self._info()
        sup = self.ctx.deployments.supervisor
        if sup is not None and not info.engines:  # package metadata of engines.vllm.python, read once
            engines, plugins = await asyncio.to_thread(lambda: (sup.engines(), sup.plugin_versions()))
            if not info.engines:  # a concurrent GetInfo may have filled them meanwhile
                info.engines.extend(node_pb2.EngineAvailability(name=n, version=v,
                                                                plugins=plugins if n != "builtin" else {})
                                    for n, v in engines.items())
        return info

    async def ListModels(self, request, context):
        entries = await asyncio.to_thread(self.ctx.repository.scan)  # disk reads stay off the loop
        listed = {e.name for e in entries}
        # a deployed model whose folder has since gone is still listed while it is deployed
        entries += [d.entry for d in self.ctx.deployments.all() if d.name not in listed]
        return node_pb2.ListModelsResponse(
            models=[model_info_pb(e, self.ctx.deployments.get(e.name)) for e in entries],
            repository=str(self.ctx.repository.root), free_bytes=self.ctx.repository.free_bytes())

    def _model_pb(self, name: str) -> node_pb2.ModelInfo | None:
        entry = self.ctx.repository.get(name)
        return model_info_pb(entry, self.ctx.deployments.get(name)) if entry else None

    async def Deploy(self, request, context):
        req = DeployRequest(
            model=request.model, dtype=request.dtype, device_indices=tuple(request.device_indices),
            max_batch=request.max_batch, max_context=request.max_context,
            kv_cache_fraction=request.kv_cache_fraction, force=request.force, engine=request.engine,
            tensor_parallel_size=request.tensor_parallel_size, **engine_options(request))
        params = {"dtype": req.dtype, "device_indices": list(req.device_indices), "max_batch": req.max_batch,
                  "max_context": req.max_context, "kv_cache_fraction": round(req.kv_cache_fraction, 4),
                  "force": req.force, "engine": req.engine or "builtin",
                  "tensor_parallel_size": req.tensor_parallel_size, **engine_options(request)}
        stream = self.ctx.deployments.deploy(req)
        recorded = False
        try:
            async for ev in stream:
                msg = node_pb2.DeployProgress(stage=_STAGE_PB[ev.stage], fraction=ev.fraction,
                                              message=ev.message, elapsed_seconds=ev.elapsed_s)
                if ev.stage == Stage.LOADING_WEIGHTS:
                    msg.done_bytes, msg.total_bytes = ev.done, ev.total
                if ev.stage in (Stage.READY, Stage.FAILED):
                    ok = ev.stage == Stage.READY
                    await self.ctx.record("node.Deploy", req.model, params, "ok" if ok else "failed",
                                          "" if ok else ev.message)
                    recorded = True
                    model = self._model_pb(req.model)
                    if model is not None:
                        msg.model.CopyFrom(model)
                yield msg
        except RequestError as exc:
            recorded = True
            await self.ctx.record("node.Deploy", req.model, params, "failed", str(exc))
            await abort(context, exc)
        finally:
            await stream.aclose()
            if not recorded:  # the client went away mid-deploy (or the daemon stopped)
                try:
                    await self.ctx.record("node.Deploy", req.model, params, "failed",
                                          "the deploy was cancelled before it finished")
                except Exception:  # noqa: BLE001 - never mask the cancellation
                    log.exception("auditing a cancelled deploy failed")

    async def Undeploy(self, request, context):
        if request.mode not in node_pb2.UndeployMode.values():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"Undeploy mode {request.mode} is unknown; use DRAIN or CANCEL.")
        cancel = request.mode == node_pb2.UNDEPLOY_MODE_CANCEL
        timeout_s = (request.drain_timeout_ms or 30000) / 1000.0
        params = {"mode": node_pb2.UndeployMode.Name(request.mode), "drain_timeout_ms": request.drain_timeout_ms}

        async def undeploy_and_record():
            try:
                res = await self.ctx.deployments.undeploy(request.model, cancel=cancel, drain_timeout_s=timeout_s)
            except RequestError as exc:
                await self.ctx.record("node.Undeploy", request.model, params, "failed", str(exc))
                raise
            self.ctx.metrics.forget_model(request.model)
            await self.ctx.record("node.Undeploy", request.model, params, "ok")
            return res

        # An unload, once begun, runs to its end and is audited even if the caller goes away
        # (the task copies the caller's context, so the record names the caller).
        try:
            res = await asyncio.shield(self.ctx.deployments.track(undeploy_and_record()))
        except RequestError as exc:
            await abort(context, exc)
        return node_pb2.UndeployResponse(freed_bytes=res.freed_bytes, cancelled_requests=res.cancelled,
                                         drained_requests=res.drained)
