"""Serving the HTTP front door on musad's event loop: uvicorn as a task, not a process.

`HttpFrontDoor.start(ctx)` binds `server.http_listen` itself (so a port in use is a clear
error and port 0 works), with the gRPC port's TLS certificate when one is configured, and
refuses plaintext on a non-loopback address unless `server.insecure` (like gRPC).
`stop(grace_s)` stops accepting, gives open requests `grace_s`, then cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import uvicorn

from ..config import parse_hostport
from ..trust.tls import InsecureBindError, is_loopback

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: musad owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):  # noqa: ANN202
        yield


def _bind(listen: str) -> socket.socket:
    host, port = parse_hostport(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpFrontDoor:
    def __init__(self) -> None:
        self.port = 0
        self.tls = False
        self.address = ""   # "host:port" as bound (GetInfo's http_address)
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None
        self._sock: socket.socket | None = None

    def start(self, ctx: Any) -> int:
        """Binds and starts serving (the accept loop runs once the event loop turns);
        returns the bound port. Raises OSError (address in use) or InsecureBindError."""
        from .routes import create_app

        config = ctx.config
        listen = config.server.http_listen
        host, _ = parse_hostport(listen)
        tls = config.tls
        if not (tls.cert and tls.key) and not is_loopback(host):
            if not config.server.insecure:
                raise InsecureBindError(
                    f"refusing plaintext HTTP on the non-loopback address {listen}: give --tls-cert/--tls-key "
                    "(musad certs init makes them) or --insecure")
            log.warning("INSECURE: serving plaintext HTTP on %s; API keys and prompts cross the network "
                        "unencrypted (use --tls-cert/--tls-key)", listen)
        self._sock = _bind(listen)
        self.port = self._sock.getsockname()[1]
        self.address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.tls = bool(tls.cert and tls.key)
        kwargs: dict[str, Any] = {}
        if self.tls:
            kwargs.update(ssl_certfile=tls.cert, ssl_keyfile=tls.key)
        uconfig = uvicorn.Config(create_app(ctx), lifespan="off", log_level="warning", access_log=False,
                                 server_header=False, timeout_graceful_shutdown=max(0.1, config.server.grace_seconds),
                                 **kwargs)
        self._server = _Server(uconfig)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[self._sock]),
                                                            name="musad-http")
        return self.port

    async def started(self) -> None:
        """Waits until uvicorn accepts connections (raises if it failed to start)."""
        while self._server is not None and not self._server.started:
            if self._task is not None and self._task.done():
                self._task.result()
                raise RuntimeError("the HTTP front door stopped while starting")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            if self._sock is not None:
                self._sock.close()
            return
        self._server.should_exit = True
        try:
            await self._task
        except (Exception, SystemExit):  # noqa: BLE001
            log.exception("the HTTP front door did not stop cleanly")
        finally:
            self._server = self._task = None
            if self._sock is not None:
                self._sock.close()
