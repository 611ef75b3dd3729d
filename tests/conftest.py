"""Shared fixtures for every test folder.

- `demo_model_dir`: the demo checkpoint, written once per session (a model folder whose
  parent is a models repository holding only it).
- `daemon`: a real musad server on port 0 with a temp state folder and SQLite.
- `postgres_url`: the test PostgreSQL URL, or a skip (a failure under MUSA_OPS_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pathlib  # noqa: E402

import pytest  # noqa: E402

from musaops.daemon.demo_model import DEMO_MODEL_NAME, write_demo_model  # noqa: E402


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> pathlib.Path:
    """`<tmp>/models/tiny-llama`, the model `musad demo-model` writes."""
    return write_demo_model(tmp_path_factory.mktemp("repo") / "models" / DEMO_MODEL_NAME)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("MUSA_OPS_TEST_POSTGRES_URL", "")
    if not url:
        if os.environ.get("MUSA_OPS_REQUIRE_POSTGRES") == "1":
            pytest.fail("MUSA_OPS_REQUIRE_POSTGRES=1 but MUSA_OPS_TEST_POSTGRES_URL is unset")
        pytest.skip("PostgreSQL tests need MUSA_OPS_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    return url


async def read_generate(stub, request) -> tuple[str, object]:
    """One Generate stream (from an InferenceStub) read to its end: (the streamed text joined,
    the final GenerateResult)."""
    parts, result = [], None
    async for r in stub.Generate(request):
        if r.HasField("result"):
            result = r.result
        else:
            parts.append(r.text)
    return "".join(parts), result


class DaemonHandle:
    """A real musad (run_server) on its own event-loop thread, so sync tests (Qt) and async
    tests alike can use it. `.address` "127.0.0.1:PORT", `.port`, `.ctx`, `.config`;
    `.channel()` a grpc.aio channel for the caller's loop, `.sync_channel()` a blocking one,
    `.call(coro)` runs a coroutine on the daemon's loop (for ctx.deployments and friends);
    `await .until(predicate, what)` and `await .audit_records(action, count)` wait (from the
    caller's loop) for state the daemon reaches on its own."""

    def __init__(self, config, **server_kwargs):
        import asyncio
        import threading

        from musaops.daemon.server import run_server

        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-daemon", daemon=True)
        self._thread.start()
        self._cm = run_server(config, **server_kwargs)
        try:
            self.server, self.port, self.ctx = self.call(self._cm.__aenter__(), timeout=60)
        except BaseException:
            self._stop_loop()
            raise
        self.address = f"127.0.0.1:{self.port}"
        self._channels: list = []
        self._stopped = False

    def call(self, coro, timeout: float = 60):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def until(self, predicate, what: str, timeout_s: float = 30.0) -> None:
        """Poll `predicate()` every 10 ms; AssertionError naming `what` if it stays false."""
        import asyncio

        for _ in range(int(timeout_s / 0.01)):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"never happened: {what}")

    async def audit_records(self, action: str, count: int, timeout_s: float = 30.0) -> list:
        """The audit records of `action` once there are `count` of them (audits are written
        off the RPC's path); whatever is there after `timeout_s` otherwise."""
        import asyncio

        from musaops.daemon.trust.audit import AuditFilter

        records: list = []
        for _ in range(int(timeout_s / 0.02)):
            records = self.ctx.audit.query(AuditFilter(action=action))
            if len(records) == count:
                break
            await asyncio.sleep(0.02)
        return records

    def channel(self):
        import grpc

        ch = grpc.aio.insecure_channel(self.address)
        return ch

    def sync_channel(self):
        import grpc

        ch = grpc.insecure_channel(self.address)
        self._channels.append(ch)
        return ch

    def stop(self) -> None:
        """Graceful shutdown (as on SIGTERM). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for ch in self._channels:
            ch.close()
        try:
            self.call(self._cm.__aexit__(None, None, None), timeout=120)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def make_daemon(tmp_path, demo_model_dir):
    """Factory: make_daemon(models_dir=None, **config_overrides) -> a started DaemonHandle.

    Defaults: port 0, metrics on port 0, CPU device, state and SQLite in tmp_path, models
    from the demo repository, auth off (pass **{"auth.required": True} to test auth),
    grace 5 s. Every daemon made is stopped at teardown."""
    from musaops.daemon.config import load_config

    handles: list[DaemonHandle] = []

    def make(models_dir=None, server_kwargs=None, **overrides) -> DaemonHandle:
        n = len(handles)
        cfg = {
            "server.listen": "127.0.0.1:0", "server.metrics_listen": "127.0.0.1:0", "server.http_listen": "127.0.0.1:0",
            "server.grace_seconds": 5.0, "models.device": "cpu", "auth.required": False,
            "storage.state_dir": str(tmp_path / f"state{n}"),
            "models.dir": str(models_dir or demo_model_dir.parent),
        }
        cfg.update({k.replace("__", "."): v for k, v in overrides.items()})
        handle = DaemonHandle(load_config(None, cfg), **(server_kwargs or {}))
        handles.append(handle)
        return handle

    yield make
    for h in reversed(handles):
        h.stop()


@pytest.fixture
def daemon(make_daemon) -> DaemonHandle:
    """A started daemon with the default test settings (see make_daemon)."""
    return make_daemon()
