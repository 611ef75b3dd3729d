"""Inference wire <-> domain: GenerateRequest -> GenerationRequest, results -> protobuf.

The sampling fields are read by the names of `engine.api.SamplingParams` (its dataclass
fields are the list): a proto field with presence counts when set, any other when non-zero
or non-empty (the proto documents 0 / empty as "the default"); `sampling_from_fields` fills
the defaults and validates, the same function another transport calls. Bad input raises
`InvalidRequestError` with a sentence (INVALID_ARGUMENT).
"""

from __future__ import annotations

from typing import Any

from musaops.v1 import inference_pb2

from ..config import EngineConfig
from ..engine.api import (SAMPLING_FIELDS, FinishReason, GenerationRequest, GenerationResult,
                          InvalidRequestError, SamplingParams, TextDelta, sampling_from_fields)
from ..errors import shown

MAX_REQUEST_ID_CHARS = 128   # echoed in every delta and audited
MAX_CHAT_MESSAGES = 4096     # per request
CHAT_ROLES = ("system", "user", "assistant", "tool")
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


def generation_request(request: inference_pb2.GenerateRequest, request_id: str, limits: EngineConfig,
                       cache_scope: str) -> GenerationRequest:
    """A Generate request -> the engine's GenerationRequest (InvalidRequestError)."""
    if not request.model:
        raise InvalidRequestError("Say which model to use: `model` is empty.")
    if request.prompt and request.messages:
        raise InvalidRequestError("Send either `prompt` or `messages`, not both.")
    if not request.prompt and not request.messages:
        raise InvalidRequestError("The prompt is empty: send a prompt or chat messages.")
    if len(request.request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidRequestError(f"request_id is {len(request.request_id):,} characters; "
                                  f"at most {MAX_REQUEST_ID_CHARS} are allowed.")
    if len(request.messages) > MAX_CHAT_MESSAGES:
        raise InvalidRequestError(f"{len(request.messages):,} chat messages given; "
                                  f"at most {MAX_CHAT_MESSAGES} are allowed.")
    for m in request.messages:
        if m.role not in CHAT_ROLES:
            raise InvalidRequestError(f"Chat role {m.role!r} is not one of {', '.join(CHAT_ROLES)}.")
    return GenerationRequest(request_id=request_id, prompt=request.prompt or None,
                             messages=tuple((m.role, m.content) for m in request.messages),
                             sampling=sampling_from_pb(request.sampling, limits), cache_scope=cache_scope)


def audit_name(name: str) -> str:
    """A name or id for the audit log: as sent, or cut short by shown() when huge."""
    return name if len(name) <= MAX_REQUEST_ID_CHARS else shown(name)


def delta_pb(request_id: str, delta: TextDelta) -> inference_pb2.GenerateResponse:
    return inference_pb2.GenerateResponse(request_id=request_id, text=delta.text, tokens=delta.tokens)


def result_pb(result: GenerationResult) -> inference_pb2.GenerateResult:
    m = result.metrics
    return inference_pb2.GenerateResult(
        usage=inference_pb2.Usage(prompt_tokens=m.prompt_tokens, completion_tokens=m.completion_tokens),
        timings=inference_pb2.Timings(queue_ms=m.queue_s * 1e3, ttft_ms=m.ttft_s * 1e3,
                                      mean_itl_ms=m.mean_itl_s * 1e3, total_ms=m.total_s * 1e3),
        finish_reason=_FINISH_PB[result.finish_reason], error=result.error, stop=result.stop)
