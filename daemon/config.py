"""musad configuration: a TOML file plus command-line flags, merged into one frozen `Config`.

Flags override the file, the file overrides the defaults. Every key is checked: an unknown
key, a wrong type or a bad value raises `ConfigError` naming the key (`server.listen`) and
the problem; `musad serve` prints it and exits 2. Paths in the file are relative to the
file's folder; paths from flags are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEVICES = ("auto", "musa", "cuda", "cpu")
PREFIX_CACHE_SCOPES = ("caller", "model")


class ConfigError(ValueError):
    """A configuration problem, as one sentence naming the key."""


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"           # gRPC HOST:PORT (port 0 picks a free port)
    metrics_listen: str = "127.0.0.1:9400"    # Prometheus HOST:PORT; "" disables /metrics
    http_listen: str = "127.0.0.1:8000"       # OpenAI-compatible HTTP HOST:PORT; "" disables it
    grace_seconds: float = 30.0               # on SIGTERM, how long in-flight RPCs may finish
    insecure: bool = False                    # allow plaintext on a non-loopback address


@dataclass(frozen=True)
class TlsConfig:
    cert: str | None = None       # server certificate (PEM)
    key: str | None = None        # its private key (PEM)
    client_ca: str | None = None  # CA that signs client certificates (enables mTLS)


@dataclass(frozen=True)
class StorageConfig:
    state_dir: str = ""   # "" = /var/lib/musad as root, else the user's state folder
    db_url: str = ""      # SQLAlchemy URL; "" = SQLite file musad.db in state_dir


@dataclass(frozen=True)
class ModelsConfig:
    dir: str = ""         # "" = <state_dir>/models
    device: str = "auto"  # auto | musa | cuda | cpu
    reserve_bytes: int = 1 << 30          # free disk an import or pull must leave (model_transfer)
    max_model_bytes: int = 1 << 40        # largest model an import or pull accepts
    staging_max_age_s: float = 7 * 86400  # start-up removes staged transfers untouched this long (0: all)
    pull_streams: int = 4                 # ExportModel streams a pull of a multi-file model opens side by side


@dataclass(frozen=True)
class EngineConfig:
    max_models: int = 4
    max_queue: int = 256
    max_tokens: int = 4096
    max_stop_strings: int = 16
    default_max_batch: int = 32
    default_kv_cache_fraction: float = 0.5
    kv_block_size: int = 16
    prefill_token_budget: int = 2048
    prefix_caching: bool = True
    prefix_cache_scope: str = "caller"   # caller | model: who shares cached prompt prefixes
    template_timeout_s: float = 2.0      # a chat template rendering longer: INVALID_ARGUMENT
    stream_backlog_tokens: int = 1024    # unread tokens before a stream is cancelled (RESOURCE_EXHAUSTED)


@dataclass(frozen=True)
class TelemetryConfig:
    history_seconds: int = 900  # span of the in-memory history ring (1 s resolution)


@dataclass(frozen=True)
class AuditConfig:
    store_prompts: bool = False  # keep prompt text in audit records (off: only sizes/hashes)


@dataclass(frozen=True)
class AuthConfig:
    required: bool = True  # RPCs need a bearer token (or a client certificate)


@dataclass(frozen=True)
class VllmConfig:
    """[engines.vllm]: how musad supervises vLLM children (daemon/supervised/)."""

    python: str = ""                # interpreter with vllm installed; "" = the daemon's own
    startup_timeout_s: float = 900.0  # a child not healthy by then ends its Deploy FAILED
    stop_timeout_s: float = 20.0    # SIGTERM to the child's process group, then SIGKILL
    restarts: int = 1               # restarts after a crash while READY; then it stays FAILED
    enforce_eager: bool = False     # no graph capture or compile: faster start-ups, slower steps
    cpu_kv_cache_gib: float = 0.0   # CPU nodes: VLLM_CPU_KVCACHE_SPACE; 0 = kv_cache_fraction of RAM
    log_max_bytes: int = 8 << 20    # per-deployment child log, then rotated once (.1)


@dataclass(frozen=True)
class EnginesConfig:
    vllm: VllmConfig = field(default_factory=VllmConfig)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    engines: EnginesConfig = field(default_factory=EnginesConfig)

    @property
    def state_dir(self) -> pathlib.Path:
        return pathlib.Path(self.storage.state_dir)


def default_state_dir() -> str:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/musad"
    import platformdirs

    return platformdirs.user_state_dir("musad", appauthor=False)


def default_db_url(state_dir: str) -> str:
    """The database when storage.db_url is not set: SQLite musad.db in the state folder."""
    return f"sqlite:///{pathlib.Path(state_dir) / 'musad.db'}"


def parse_hostport(value: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); raises ValueError with a sentence."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} is outside 0..65535")
    return host, int(port)


def _check_listen(v: str) -> None:
    parse_hostport(v)


def _check_metrics(v: str) -> None:   # an optional address: "" turns it off
    if v:
        parse_hostport(v)


_MAX_LIMIT = 2**31 - 1      # engine limits travel as uint32 in GetInfo
_MAX_GRACE_S = 86400.0
_MAX_STREAMS = 64           # models.pull_streams: each stream holds a few MiB and two threads


def _positive(v: int) -> None:
    if v <= 0:
        raise ValueError(f"must be greater than 0, got {v}")
    if v > _MAX_LIMIT:
        raise ValueError(f"must be at most {_MAX_LIMIT}, got {v}")


def _grace(v: float) -> None:
    if v != v or v in (float("inf"), float("-inf")):  # TOML allows nan and inf
        raise ValueError(f"must be a finite number of seconds, got {v}")
    if v < 0:
        raise ValueError(f"must not be negative, got {v}")
    if v > _MAX_GRACE_S:
        raise ValueError(f"must be at most {_MAX_GRACE_S:.0f} seconds, got {v}")


def _fraction(v: float) -> None:
    if not 0 < v <= 0.95:  # also refuses nan
        raise ValueError(f"must be in (0, 0.95], got {v}")


def _device(v: str) -> None:
    if v not in DEVICES:
        raise ValueError(f"must be one of {', '.join(DEVICES)}, got {v!r}")


def _cache_scope(v: str) -> None:
    if v not in PREFIX_CACHE_SCOPES:
        raise ValueError(f"must be one of {', '.join(PREFIX_CACHE_SCOPES)}, got {v!r}")


def _seconds(v: float) -> None:
    if not 0 < v <= _MAX_GRACE_S:  # also refuses nan
        raise ValueError(f"must be in (0, {_MAX_GRACE_S:.0f}] seconds, got {v}")


def _non_negative(v: float) -> None:
    if not 0 <= v <= _MAX_LIMIT:  # also refuses nan
        raise ValueError(f"must be 0 or more (at most {_MAX_LIMIT}), got {v}")


def _streams(v: int) -> None:
    if not 1 <= v <= _MAX_STREAMS:
        raise ValueError(f"must be 1..{_MAX_STREAMS} streams, got {v}")


def _history(v: int) -> None:
    if not 1 <= v <= 86400:
        raise ValueError(f"must be 1..86400 seconds, got {v}")


_VALUE_CHECKS: dict[str, Callable[[Any], None]] = {
    "server.listen": _check_listen,
    "server.metrics_listen": _check_metrics,
    "server.http_listen": _check_metrics,
    "server.grace_seconds": _grace,
    "models.device": _device,
    "models.pull_streams": _streams,
    "engine.prefix_cache_scope": _cache_scope,
    "engine.default_kv_cache_fraction": _fraction,
    "telemetry.history_seconds": _history,
    "engines.vllm.startup_timeout_s": _seconds,
    "engines.vllm.stop_timeout_s": _seconds,
    "engines.vllm.restarts": _non_negative,
    "engines.vllm.cpu_kv_cache_gib": _non_negative,
    "engines.vllm.log_max_bytes": _positive,
    **{f"engine.{k}": _positive for k in (
        "max_models", "max_queue", "max_tokens", "max_stop_strings", "default_max_batch",
        "kv_block_size", "prefill_token_budget", "template_timeout_s", "stream_backlog_tokens")},
}
_PATH_KEYS = {"tls.cert", "tls.key", "tls.client_ca", "storage.state_dir", "models.dir"}
# Interpreters: made absolute, symlinks kept (a venv's python is a link to the base one);
# a bare name ("python3") is looked up on PATH when the child starts.
_PROGRAM_KEYS = {"engines.vllm.python"}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Checks `value` against the field's type; ints are accepted where floats are."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is bool:
            if isinstance(value, bool):
                return value
        elif t is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif t is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif t is str:
            if isinstance(value, str):
                return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Reads `path` (TOML; None = defaults only), applies dotted-key `overrides`, validates."""
    raw: dict[str, Any] = {}
    base = pathlib.Path.cwd()
    if path is not None:
        p = pathlib.Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(p)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(p)!r} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
        base = p.resolve().parent

    sections = _sections()
    values: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for name, section in raw.items():
        if name not in sections:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(sections)})")
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: expected a [{name}] table, got {type(section).__name__}")
        for key, value in section.items():
            values[name][key] = (value, base)
    for dotted, value in (overrides or {}).items():
        name, _, key = dotted.partition(".")
        if name not in sections:
            raise ConfigError(f"{dotted}: unknown section")
        values[name][key] = (value, pathlib.Path.cwd())

    built = {name: _build(name, cls, values[name]) for name, cls in sections.items()}
    cfg = Config(**built)
    return _resolve_defaults(cfg)


def _build(prefix: str, cls: type, items: dict[str, tuple[Any, pathlib.Path]]) -> Any:
    """One section (or a nested table such as [engines.vllm]) from its (value, base) items;
    keys may be dotted ("vllm.python", from flags) or tables (from TOML)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    nested: dict[str, dict[str, tuple[Any, pathlib.Path]]] = {}
    for key, (value, rel) in items.items():
        head, dot, rest = key.partition(".")
        dotted = f"{prefix}.{head}"
        if head not in hints:
            raise ConfigError(f"{prefix}.{key}: unknown key (known: {', '.join(hints)})")
        if dataclasses.is_dataclass(hints[head]):
            if dot:
                nested.setdefault(head, {})[rest] = (value, rel)
            elif isinstance(value, dict):
                nested.setdefault(head, {}).update({k: (v, rel) for k, v in value.items()})
            else:
                raise ConfigError(f"{dotted}: expected a [{dotted}] table, got {type(value).__name__}")
            continue
        if dot:
            raise ConfigError(f"{prefix}.{key}: unknown key (known: {', '.join(hints)})")
        value = _coerce(dotted, value, hints[key])
        if dotted in _VALUE_CHECKS:
            try:
                _VALUE_CHECKS[dotted](value)
            except ValueError as exc:
                raise ConfigError(f"{dotted}: {exc}") from None
        if dotted in _PATH_KEYS and value:
            value = str((rel / pathlib.Path(value).expanduser()).resolve())
        if dotted in _PROGRAM_KEYS and "/" in value:
            value = os.path.abspath(rel / pathlib.Path(value).expanduser())
        kwargs[key] = value
    for head, sub in nested.items():
        kwargs[head] = _build(f"{prefix}.{head}", hints[head], sub)
    return cls(**kwargs)


def _resolve_defaults(cfg: Config) -> Config:
    """Fills the derived defaults: state folder, models folder, SQLite URL."""
    state = cfg.storage.state_dir or default_state_dir()
    db_url = cfg.storage.db_url or default_db_url(state)
    models = cfg.models.dir or str(pathlib.Path(state) / "models")
    if bool(cfg.tls.cert) != bool(cfg.tls.key):
        raise ConfigError("tls.cert and tls.key: give both or neither")
    if cfg.tls.client_ca and not cfg.tls.cert:
        raise ConfigError("tls.client_ca: needs tls.cert and tls.key (mTLS runs over TLS)")
    return dataclasses.replace(
        cfg,
        storage=dataclasses.replace(cfg.storage, state_dir=state, db_url=db_url),
        models=dataclasses.replace(cfg.models, dir=models),
    )
