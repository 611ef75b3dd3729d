"""The `musad` command: serve, demo-model (and, registered by their own modules, token,
certs, audit, usage, and the shell client: status, models, deploy, undeploy, generate, chat).

Each subcommand is one `register(subparsers)` function that adds its parser and sets
`func(args) -> exit code`. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or
configuration (a config error, a port in use, an absent backend, a database that does not
exist or cannot be reached), 130 interrupted. `main` turns a ConfigError or AuditError
that a subcommand lets through into one sentence and exit 2.
"""

from __future__ import annotations

import os

# grpc core writes its own unformatted lines (add_port.cc, ssl_transport_security.cc) to
# stderr; musad reports those failures itself, so they are off unless the user asks.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from . import __version__  # noqa: E402
from .config import DEVICES, ConfigError, load_config  # noqa: E402

log = logging.getLogger("musaops.daemon")


class LogfmtFormatter(logging.Formatter):
    """One line per record: `time=... level=... logger=... msg="..."` (plus the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        line = f'time={ts} level={record.levelname} logger={record.name} msg="{msg}"'
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", "\\n")
            line += f' exc="{exc}"'
        return line


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _fail(message: str, code: int = 2) -> int:
    print(f"musad: {message}", file=sys.stderr)
    return code


# -- musad serve ----------------------------------------------------------------------------

_FLAG_KEYS = {  # flag dest -> config key
    "listen": "server.listen", "metrics_listen": "server.metrics_listen", "http_listen": "server.http_listen",
    "models": "models.dir",
    "device": "models.device", "db": "storage.db_url", "state_dir": "storage.state_dir",
    "tls_cert": "tls.cert", "tls_key": "tls.key", "client_ca": "tls.client_ca",
}


def register_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the daemon", description="Run the musad gRPC daemon.")
    p.add_argument("--config", metavar="FILE", help="TOML config file (see resources/musad.toml)")
    p.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (default 127.0.0.1:50051)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help='Prometheus /metrics address (default 127.0.0.1:9400; "" disables)')
    p.add_argument("--http-listen", metavar="HOST:PORT",
                   help='OpenAI-compatible HTTP address (default 127.0.0.1:8000; "" disables)')
    p.add_argument("--models", metavar="DIR", help="model repository folder (default <state-dir>/models)")
    p.add_argument("--device", choices=DEVICES, help="accelerator backend (default auto: MUSA, CUDA, CPU)")
    p.add_argument("--db", metavar="URL",
                   help="SQLAlchemy URL or SQLite path of the daemon database; its folder must exist "
                        "(default <state-dir>/musad.db)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="state folder: database, signing key (default /var/lib/musad as root, "
                        "else the user's state folder; created if absent)")
    p.add_argument("--tls-cert", metavar="PEM", help="server certificate")
    p.add_argument("--tls-key", metavar="PEM", help="server private key")
    p.add_argument("--client-ca", metavar="PEM", help="CA for client certificates (mTLS)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="allow plaintext gRPC on a non-loopback address")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="least severe log lines written to stderr (default INFO)")
    p.set_defaults(func=cmd_serve)


def serve_overrides(args: argparse.Namespace) -> dict:
    out = {key: getattr(args, dest) for dest, key in _FLAG_KEYS.items() if getattr(args, dest, None) is not None}
    if getattr(args, "insecure", None):
        out["server.insecure"] = True
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config, serve_overrides(args))   # a ConfigError: main says it
    setup_logging(args.log_level)
    from .server import PortInUseError, StartupError

    try:
        return asyncio.run(_serve(config))
    except PortInUseError as exc:
        return _fail(str(exc))
    except StartupError as exc:  # unusable state folder
        return _fail(str(exc))
    except PermissionError as exc:  # plaintext on a non-loopback address (tls.InsecureBindError)
        return _fail(str(exc))
    except Exception as exc:  # an absent backend (an unreachable database: main, AuditError)
        from .devices import DeviceError

        if isinstance(exc, DeviceError):
            return _fail(str(exc).splitlines()[0])
        raise


async def _serve(config) -> int:
    from .server import run_server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = config.server.grace_seconds + HARD_EXIT_MARGIN_S

    def on_signal(signum: int, _frame) -> None:  # noqa: ANN001
        # A Python-level handler, not loop.add_signal_handler: it runs even while the event
        # loop is stuck, and arms the second stage before anything else can hang.
        if stop.is_set():   # a second signal: do not wait any longer
            _hard_exit(f"signal {signum} received again during shutdown")
        _arm_hard_exit(deadline)
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    async with run_server(config) as (_server, port, ctx):
        log.info("listening on %s (port %d); metrics on %s", config.server.listen, port,
                 f"port {ctx.metrics.port}" if config.server.metrics_listen else "off")
        await stop.wait()
        log.info("signal received: shutting down")
    return 0


HARD_EXIT_MARGIN_S = 5.0   # beyond server.grace_seconds, for closing engines and the database


def _arm_hard_exit(seconds: float) -> None:
    """The second stage of SIGTERM: whatever still runs after `seconds` (a drain that
    overran, a thread that never returns, a stuck event loop) ends with the process."""
    timer = threading.Timer(seconds, _hard_exit, (f"shutdown took longer than {seconds:.0f} s",))
    timer.daemon = True
    timer.start()


def _hard_exit(why: str) -> None:
    try:   # no logging call: its lock may be held by the thread that is stuck
        os.write(2, f'time={time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} level=ERROR '
                    f'logger=musaops.daemon msg="{why}: exiting now"\n'.encode())
    finally:
        os._exit(1)


# -- musad demo-model -----------------------------------------------------------------------

def register_demo_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-model", help="write a tiny Llama checkpoint for demos and tests",
                       description="Write a small seeded-random LlamaForCausalLM (under 5 MB) into DIR.")
    p.add_argument("dir", metavar="DIR", help="folder to write (created; becomes the model's folder)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    p.set_defaults(func=cmd_demo_model)


def cmd_demo_model(args: argparse.Namespace) -> int:
    from .demo_model import write_demo_model

    try:
        out = write_demo_model(args.dir, seed=args.seed)
    except OSError as exc:
        return _fail(f"cannot write the demo model to {args.dir}: {exc.strerror or exc}", 1)
    print(out)
    return 0


# -- entry point ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musad", description="musa-ops node daemon")
    parser.add_argument("--version", action="version", version=f"musad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_serve(sub)
    register_demo_model(sub)
    # Other parts add their subcommands here, one register(sub) call each (token, certs, audit).
    from .trust import cli_security

    cli_security.register_token(sub)
    cli_security.register_certs(sub)
    cli_security.register_audit(sub)
    from .cli_usage import register_usage

    register_usage(sub)
    from . import client_cli

    client_cli.register(sub)
    _note_parsers(parser)
    return parser


def _note_parsers(parser: argparse.ArgumentParser) -> None:
    """Every subparser records itself as `_parser`, so a misspelt option is reported with the
    usage of the subcommand it was given to (the deepest one wins), not musad's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                sp.set_defaults(_parser=sp)
                _note_parsers(sp)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from .trust.audit import AuditError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    except AuditError as exc:  # a database that does not exist or cannot be opened
        return _fail(str(exc).splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
