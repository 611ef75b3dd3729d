"""Inference wire <-> domain: GenerateRequest -> InferenceRequest, results -> protobuf.

The sampling fields are read by the names of `engine.api.SamplingParams` (its dataclass
fields are the list): a proto field with presence counts when set, any other when non-zero
or non-empty (the proto documents 0 / empty as "the default"); `sampling_from_fields` fills
the defaults and validates, the same function another transport calls (through the inference core, which checks the
rest of the request).
"""

from __future__ import annotations

from typing import Any

from musaops.v1 import inference_pb2

from ..config import EngineConfig
from ..engine.api import (SAMPLING_FIELDS, FinishReason, GenerationResult, SamplingParams, TextDelta,
                          sampling_from_fields)
from ..inference_core import InferenceRequest

_FINISH_PB = {
    FinishReason.STOP: inference_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: inference_pb2.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: inference_pb2.FINISH_REASON_CANCELLED,
    FinishReason.ERROR: inference_pb2.FINISH_REASON_ERROR,
}
_PB_FIELDS = inference_pb2.SamplingParams.DESCRIPTOR.fields_by_name


def sampling_values(sp: inference_pb2.SamplingParams) -> dict[str, Any]:
    """The sampling fields the client set, by SamplingParams field name."""
    out: dict[str, Any] = {}
    for name in SAMPLING_FIELDS:
        if _PB_FIELDS[name].has_presence:
            if sp.HasField(name):
                out[name] = getattr(sp, name)
        elif value := getattr(sp, name):
            out[name] = value
    return out


def sampling_from_pb(sp: inference_pb2.SamplingParams, limits: EngineConfig) -> SamplingParams:
    """Proto sampling parameters -> validated SamplingParams (InvalidRequestError)."""
    return sampling_from_fields(sampling_values(sp), max_tokens_limit=limits.max_tokens,
                                max_stop_strings=limits.max_stop_strings)


def inference_request(request: inference_pb2.GenerateRequest) -> InferenceRequest:
    """A Generate request -> the inference core's request (the core checks it)."""
    return InferenceRequest(model=request.model, prompt=request.prompt or None,
                            messages=tuple((m.role, m.content) for m in request.messages),
                            sampling=sampling_values(request.sampling), request_id=request.request_id,
                            transport="grpc")


def delta_pb(request_id: str, delta: TextDelta) -> inference_pb2.GenerateResponse:
    return inference_pb2.GenerateResponse(request_id=request_id, text=delta.text, tokens=delta.tokens)


def result_pb(result: GenerationResult) -> inference_pb2.GenerateResult:
    m = result.metrics
    return inference_pb2.GenerateResult(
        usage=inference_pb2.Usage(prompt_tokens=m.prompt_tokens, completion_tokens=m.completion_tokens),
        timings=inference_pb2.Timings(queue_ms=m.queue_s * 1e3, ttft_ms=m.ttft_s * 1e3,
                                      mean_itl_ms=m.mean_itl_s * 1e3, total_ms=m.total_s * 1e3),
        finish_reason=_FINISH_PB[result.finish_reason], error=result.error, stop=result.stop)
