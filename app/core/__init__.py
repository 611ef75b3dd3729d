"""Qt-free console core: immutable dataclasses and ring buffers."""

from .engine_options import EngineOptions
from .nodes import (ConnectionState, DeviceInfo, EngineAvailability, EngineLimits, NodeAddress, NodeInfo,
                    NodeStatus, TlsFiles, parse_address)
from .operations import (ChatMessage, CommandError, DeployEvent, DeploymentInfo, DeploySpec,
                         GenerateSpec, GenerationDone, MemoryEstimate, ModelEntry, Sampling,
                         Timings, TokenChunk, UndeployResult, Usage)
from .samples import DeviceSample, HostSample, ModelStatsSample, Snapshot

__all__ = [
    "ChatMessage", "CommandError", "ConnectionState", "DeployEvent", "DeploySpec",
    "DeploymentInfo", "DeviceInfo", "DeviceSample", "EngineAvailability", "EngineLimits", "EngineOptions", "GenerateSpec",
    "GenerationDone", "HostSample", "MemoryEstimate", "ModelEntry", "ModelStatsSample",
    "NodeAddress", "NodeInfo", "NodeStatus", "Sampling", "Snapshot", "Timings", "TlsFiles",
    "TokenChunk", "UndeployResult", "Usage", "parse_address",
]
