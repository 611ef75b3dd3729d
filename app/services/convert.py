"""Protobuf -> console dataclasses (and specs -> requests).

The only place that knows both shapes: nothing past NodeHub ever sees a protobuf message.
"""

from __future__ import annotations

from musaops.v1 import common_pb2, inference_pb2, node_pb2, telemetry_pb2

from ..core.engine_options import EngineOptions
from ..core.nodes import DeviceInfo, EngineAvailability, EngineLimits, NodeInfo
from ..core.operations import (DeploymentInfo, DeploySpec, GenerateSpec, MemoryEstimate,
                               ModelEntry, Timings, Usage)
from ..core.samples import DeviceSample, HostSample, ModelStatsSample, Snapshot

_BACKENDS = {common_pb2.BACKEND_MUSA: "MUSA", common_pb2.BACKEND_CUDA: "CUDA",
             common_pb2.BACKEND_CPU: "CPU"}
_MODEL_STATES = {
    common_pb2.MODEL_STATE_AVAILABLE: "available", common_pb2.MODEL_STATE_ERROR: "error",
    common_pb2.MODEL_STATE_PENDING: "pending", common_pb2.MODEL_STATE_LOADING: "loading",
    common_pb2.MODEL_STATE_READY: "ready", common_pb2.MODEL_STATE_FAILED: "failed",
    common_pb2.MODEL_STATE_UNLOADING: "unloading",
}
DEPLOY_STAGES = {
    node_pb2.DEPLOY_STAGE_VALIDATING: "validating",
    node_pb2.DEPLOY_STAGE_LOADING_WEIGHTS: "loading_weights",
    node_pb2.DEPLOY_STAGE_ALLOCATING_KV_CACHE: "allocating_kv_cache",
    node_pb2.DEPLOY_STAGE_WARMING_UP: "warming_up",
    node_pb2.DEPLOY_STAGE_READY: "ready",
    node_pb2.DEPLOY_STAGE_FAILED: "failed",
}
_FINISH = {
    inference_pb2.FINISH_REASON_STOP: "stop", inference_pb2.FINISH_REASON_LENGTH: "length",
    inference_pb2.FINISH_REASON_CANCELLED: "cancelled", inference_pb2.FINISH_REASON_ERROR: "error",
}


def backend_name(value: int) -> str:
    return _BACKENDS.get(value, "unknown")


def node_info(r: node_pb2.GetInfoResponse) -> NodeInfo:
    lim = r.limits
    return NodeInfo(
        hostname=r.hostname, version=r.version, api_version=r.api_version,
        backend=backend_name(r.backend),
        devices=tuple(DeviceInfo(
            index=d.index, name=d.name, uuid=d.uuid, backend=backend_name(d.backend),
            memory_total_bytes=d.memory_total_bytes, capability=d.capability,
            driver_version=d.driver_version, pci_bus_id=d.pci_bus_id) for d in r.devices),
        limits=EngineLimits(lim.max_models, lim.max_queue, lim.max_tokens, lim.max_stop_strings,
                            lim.default_max_batch, lim.default_kv_cache_fraction),
        torch_version=r.torch_version, python_version=r.python_version,
        started_unix_ms=r.started_unix_ms, host_memory_total_bytes=r.host_memory_total_bytes,
        host_cpu_count=r.host_cpu_count, tls=r.tls, auth_required=r.auth_required,
        auto_dtype=tuple(sorted(r.auto_dtype.items())), http_address=r.http_address,
        engines=tuple(EngineAvailability(e.name, e.version, tuple(sorted(e.plugins.items())))
                      for e in r.engines))


def device_sample(d: common_pb2.DeviceSample) -> DeviceSample:
    """The fields the daemon set, by name; unset vendor fields stay None. No field is listed
    here: the console's DeviceSample has exactly common.proto's fields (a unit test checks).
    ListFields is one C call returning only the set fields: ~4 us a sample, against 2.6 us
    written out field by field, i.e. ~3 ms a second for the ~1,600 samples a second the hub
    converts at 200 nodes."""
    return DeviceSample(**{f.name: v for f, v in d.ListFields()})


def model_stats(m: telemetry_pb2.ModelStats) -> ModelStatsSample:
    return ModelStatsSample(
        model=m.model, running=m.running, waiting=m.waiting, kv_cache_usage=m.kv_cache_usage,
        generation_tokens_per_second=m.generation_tokens_per_second,
        prompt_tokens_per_second=m.prompt_tokens_per_second,
        ttft_p50_ms=m.ttft_p50_ms, ttft_p95_ms=m.ttft_p95_ms, ttft_p99_ms=m.ttft_p99_ms,
        itl_p50_ms=m.itl_p50_ms, itl_p95_ms=m.itl_p95_ms, itl_p99_ms=m.itl_p99_ms,
        e2e_p50_ms=m.e2e_p50_ms, e2e_p99_ms=m.e2e_p99_ms, requests_total=m.requests_total,
        requests_failed=m.requests_failed, prompt_tokens_total=m.prompt_tokens_total,
        generation_tokens_total=m.generation_tokens_total,
        preemptions_total=m.preemptions_total, prefix_cache_hit_tokens_total=m.prefix_cache_hit_tokens_total)


def snapshot(s: telemetry_pb2.Snapshot) -> Snapshot:
    h = s.host
    return Snapshot(
        s.time_unix_ms, s.backfill,
        HostSample(h.cpu_percent, h.memory_used_bytes, h.memory_total_bytes, h.load_average_1m),
        tuple([device_sample(d) for d in s.devices]),
        tuple([model_stats(m) for m in s.models]))


def model_entry(m: node_pb2.ModelInfo) -> ModelEntry:
    dep = None
    if m.HasField("deployment"):
        d = m.deployment
        dep = DeploymentInfo(d.dtype, tuple(d.device_indices), d.max_batch, d.max_context,
                             d.weights_bytes, d.kv_cache_bytes, d.kv_block_size,
                             d.kv_blocks_total, d.ready_unix_ms, engine=d.engine,
                             tensor_parallel_size=d.tensor_parallel_size, restarts=d.restarts, pid=d.pid,
                             max_restarts=d.max_restarts)
    return ModelEntry(
        name=m.name, state=_MODEL_STATES.get(m.state, "unknown"), architecture=m.architecture,
        parameters=m.parameters, size_bytes=m.size_bytes,
        memory_estimates=tuple(MemoryEstimate(e.dtype, e.weights_bytes, e.kv_bytes_per_token,
                                              e.total_bytes) for e in m.memory_estimates),
        reason=m.reason, max_position_embeddings=m.max_position_embeddings,
        torch_dtype=m.torch_dtype, deployment=dep, num_layers=m.num_layers,
        hidden_size=m.hidden_size, vocab_size=m.vocab_size, notice=m.notice,
        quantization=m.quantization)


def deploy_request(spec: DeploySpec) -> node_pb2.DeployRequest:
    return node_pb2.DeployRequest(
        model=spec.model, dtype=spec.dtype, device_indices=list(spec.device_indices),
        max_batch=spec.max_batch, max_context=spec.max_context,
        kv_cache_fraction=spec.kv_cache_fraction, force=spec.force, engine=spec.engine,
        tensor_parallel_size=spec.tensor_parallel_size, engine_options=engine_options(spec.engine_options),
        max_restarts=spec.max_restarts)


def engine_options(o: EngineOptions) -> node_pb2.EngineOptions:
    msg = node_pb2.EngineOptions(max_num_batched_tokens=o.max_num_batched_tokens, quantization=o.quantization,
                                 gpu_memory_utilization=o.gpu_memory_utilization)
    if o.enable_prefix_caching is not None:   # unset = the node's default
        msg.enable_prefix_caching = o.enable_prefix_caching
    return msg


def generate_request(spec: GenerateSpec) -> inference_pb2.GenerateRequest:
    sampling = inference_pb2.SamplingParams(**spec.sampling)  # set fields only, by their proto names
    return inference_pb2.GenerateRequest(
        model=spec.model, prompt=spec.prompt,
        messages=[inference_pb2.ChatMessage(role=m.role, content=m.content)
                  for m in spec.messages],
        sampling=sampling, request_id=spec.request_id)


def finish_reason(value: int) -> str:
    return _FINISH.get(value, "error")


def usage(u: inference_pb2.Usage) -> Usage:
    return Usage(u.prompt_tokens, u.completion_tokens)


def timings(t: inference_pb2.Timings) -> Timings:
    return Timings(t.queue_ms, t.ttft_ms, t.mean_itl_ms, t.total_ms)
