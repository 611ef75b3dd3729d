"""A real musad on port 0, on a thread of its own, for the Models and Playground view tests.

Qt tests run the Qt event loop on the main thread (qtbot.waitUntil), so the daemon cannot
share it: it gets its own asyncio loop on a thread. It is the real server (run_server with
the demo model's repository, CPU device, SQLite in a temp folder, auth off), reached by the
console over real gRPC.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
from typing import Any

import grpc

from musaops.daemon.config import load_config
from musaops.daemon.server import run_server
from musaops.v1 import node_pb2, node_pb2_grpc


class ThreadDaemon:
    def __init__(self, models_dir: pathlib.Path, state_dir: pathlib.Path, **overrides: Any) -> None:
        settings = {
            "server.listen": "127.0.0.1:0",
            "server.metrics_listen": "",
            "server.http_listen": "",
            "server.grace_seconds": 2,
            "storage.state_dir": str(state_dir),
            "models.dir": str(models_dir),
            "models.device": "cpu",
            "auth.required": False,
        }
        settings.update(overrides)
        self.config = load_config(None, settings)
        self.port = 0
        self.ctx: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-musad", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "ThreadDaemon":
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("musad did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with run_server(self.config) as (_server, port, ctx):
            self.port, self.ctx = port, ctx
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def deploy(self, model: str, **fields: Any) -> node_pb2.DeployProgress:
        """Deploys through the public API (a plain sync channel); returns the last message."""
        with grpc.insecure_channel(self.address) as channel:
            last = None
            for last in node_pb2_grpc.NodeStub(channel).Deploy(node_pb2.DeployRequest(model=model, **fields)):
                pass
        assert last is not None and last.stage == node_pb2.DEPLOY_STAGE_READY, last
        return last

    def undeploy(self, model: str) -> None:
        with grpc.insecure_channel(self.address) as channel:
            node_pb2_grpc.NodeStub(channel).Undeploy(
                node_pb2.UndeployRequest(model=model, mode=node_pb2.UNDEPLOY_MODE_CANCEL))

    def engine_stats(self) -> dict:
        """The deployment manager's EngineStats per model (safe from any thread)."""
        return self.ctx.deployments.engine_stats()
