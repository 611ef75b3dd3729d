"""What the console knows about a node: its address, connection state and static facts.

Plain frozen dataclasses, Qt-free and protobuf-free, so they cross from the NodeHub thread
to the GUI thread (and into tests) without copying or locking.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"  # dialling or waiting for the first answer
    ONLINE = "online"          # GetInfo answered and telemetry is flowing
    DEGRADED = "degraded"      # connected, but telemetry is late or an RPC keeps failing
    OFFLINE = "offline"        # not reachable; the hub retries with backoff
    UNAUTHORIZED = "unauthorized"   # it answers but refuses our credentials (token, client
                                    # certificate): fixed in the connection, not by waiting


# States in which a node cannot be used: views show its data as stale, an alert is raised.
UNUSABLE = frozenset({ConnectionState.OFFLINE, ConnectionState.UNAUTHORIZED})


@dataclass(frozen=True)
class TlsFiles:
    """PEM file paths for a TLS channel. ca alone = server-authenticated TLS; cert+key = mTLS."""

    ca: str = ""
    cert: str = ""
    key: str = ""


@dataclass(frozen=True)
class NodeAddress:
    """How to reach one daemon."""

    host: str
    port: int
    name: str = ""                 # display name; defaults to host:port
    token: str | None = None       # bearer token sent as `authorization` metadata
    tls: TlsFiles | None = None

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def label(self) -> str:
        return self.name or self.target

    def problem(self) -> str:
        """A sentence saying why this address cannot be dialled, or "" when it looks valid."""
        if not self.host or any(c.isspace() for c in self.host):
            return f"Invalid address {self.host!r}: the host name is empty or contains spaces."
        if not 0 < int(self.port) < 65536:
            return f"Invalid address {self.target}: the port must be between 1 and 65535."
        if self.tls is not None and bool(self.tls.cert) != bool(self.tls.key):
            return "TLS client certificate and key must be given together."
        return ""


def parse_address(text: str, **kwargs) -> NodeAddress:
    """Parses "HOST:PORT" (IPv6 as "[::1]:PORT"). Raises ValueError with a sentence."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"Invalid address {text!r}: expected HOST:PORT, e.g. 10.0.0.5:50051.")
    if not port.isdigit():
        raise ValueError(f"Invalid address {text!r}: the port {port!r} is not a number.")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    address = NodeAddress(host=host, port=int(port), **kwargs)
    problem = address.problem()
    if problem:
        raise ValueError(problem)
    return address


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    uuid: str = ""
    backend: str = "CPU"           # "MUSA", "CUDA", "CPU"
    memory_total_bytes: int = 0
    capability: str = ""
    driver_version: str = ""
    pci_bus_id: str = ""


@dataclass(frozen=True)
class EngineLimits:
    max_models: int = 0
    max_queue: int = 0
    max_tokens: int = 0
    max_stop_strings: int = 0
    default_max_batch: int = 0
    default_kv_cache_fraction: float = 0.0


@dataclass(frozen=True)
class EngineAvailability:
    """An engine Deploy accepts on the node (GetInfoResponse.engines)."""

    name: str                      # "builtin" or "vllm"
    version: str = ""              # "" for the built-in engine
    plugins: tuple[tuple[str, str], ...] = ()   # platform plugins, e.g. (("vllm_musa", "0.28.0"),)


@dataclass(frozen=True)
class NodeInfo:
    """Node.GetInfo, as the console keeps it."""

    hostname: str
    version: str = ""
    api_version: str = ""
    backend: str = "CPU"
    devices: tuple[DeviceInfo, ...] = ()
    limits: EngineLimits = field(default_factory=EngineLimits)
    torch_version: str = ""
    python_version: str = ""
    started_unix_ms: int = 0
    host_memory_total_bytes: int = 0
    host_cpu_count: int = 0
    tls: bool = False
    auth_required: bool = False
    # What dtype "auto" deploys a checkpoint as, by the checkpoint's torch_dtype ("" = any
    # other): the daemon's rule as GetInfo reports it; empty from a daemon that does not.
    auto_dtype: tuple[tuple[str, str], ...] = ()
    # The node's OpenAI-compatible HTTP address as bound ("host:port", "" = off; a wildcard
    # host means the node's own address): what the playground's HTTP snippets call.
    http_address: str = ""
    # Engines Deploy accepts there; empty from a daemon that does not say (built-in only).
    engines: tuple[EngineAvailability, ...] = ()

    def engine_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.engines) or ("builtin",)

    def resolve_dtype(self, dtype: str, checkpoint_dtype: str) -> str | None:
        """The dtype a Deploy with `dtype` ("" or "auto" = the daemon's choice) loads a
        `checkpoint_dtype` checkpoint as; None when the node did not say."""
        if dtype and dtype != "auto":
            return dtype
        table = dict(self.auto_dtype)
        return table.get(checkpoint_dtype, table.get(""))


@dataclass(frozen=True)
class NodeStatus:
    """A node's connection state; sent whenever it changes (and on every new error)."""

    node_id: str
    address: NodeAddress
    state: ConnectionState
    last_error: str = ""
    last_seen: float = 0.0          # Unix seconds of the last answer; 0 = never
    info: NodeInfo | None = None
    retry_in: float = 0.0           # seconds until the next attempt while OFFLINE


@dataclass(frozen=True)
class NodeProfile:
    """A saved connection (the console's store). id 0 = not saved yet."""

    id: int
    address: NodeAddress
