"""Crash safety: kill -9 a real `musad serve` during a burst of audited Deploy calls and
token changes (CLI processes writing the same chain); after a restart the chain verifies
and holds every action whose call had returned."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading

import grpc
import pytest

from musaops.daemon.trust.audit import AuditLog
from musaops.v1 import audit_pb2, audit_pb2_grpc, node_pb2, node_pb2_grpc

MUSAD = [sys.executable, "-m", "musaops.daemon.cli"]


def _start(state, models) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen(MUSAD + ["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--http-listen", "",
                                  "--state-dir", str(state), "--models", str(models), "--device", "cpu"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in p.stderr:   # the daemon logs its port once it serves
        m = re.search(r"serving on port (\d+)", line)
        if m:
            threading.Thread(target=p.stderr.read, daemon=True).start()   # keep draining
            return p, int(m.group(1))
    raise AssertionError(f"musad serve exited ({p.wait()}) before serving")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(MUSAD + list(args), capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(240)
async def test_kill_9_during_audited_burst_loses_no_returned_action(tmp_path):
    state, models = tmp_path / "state", tmp_path / "models"
    models.mkdir()
    tok = tmp_path / "admin.token"
    assert _cli("token", "create", "--name", "burst-admin", "--role", "admin", "--out", str(tok),
                "--state-dir", str(state)).returncode == 0
    md = (("authorization", f"Bearer {tok.read_text().strip()}"),)
    proc, port = _start(state, models)

    returned_deploys: list[str] = []
    created_tokens: list[str] = []
    stop = threading.Event()

    def token_burst() -> None:     # token changes from the CLI, in the same chain
        i = 0
        while not stop.is_set():
            name = f"burst-{i}"
            if _cli("token", "create", "--name", name, "--role", "viewer",
                    "--out", str(tmp_path / f"{name}.tok"), "--state-dir", str(state)).returncode == 0:
                created_tokens.append(name)
            i += 1

    async def deploy_burst(worker: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = node_pb2_grpc.NodeStub(ch)
            for i in range(100000):
                target = f"missing-{worker}-{i}"
                try:
                    async for _ in stub.Deploy(node_pb2.DeployRequest(model=target), metadata=md):
                        pass
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        return                       # the daemon is gone
                    assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
                returned_deploys.append(target)      # the RPC returned: its record must be durable

    tokens_thread = threading.Thread(target=token_burst)
    tokens_thread.start()
    workers = [asyncio.create_task(deploy_burst(w)) for w in range(8)]
    while len(returned_deploys) < 300:               # mid-burst, by progress, not by clock
        await asyncio.sleep(0.01)
        assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    await asyncio.gather(*workers)
    stop.set()
    tokens_thread.join()
    assert len(returned_deploys) >= 300 and created_tokens

    # restart: the daemon opens the same database, and its Audit.Verify agrees
    proc, port = _start(state, models)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            v = await audit_pb2_grpc.AuditStub(ch).Verify(audit_pb2.VerifyRequest(), metadata=md)
        assert v.ok, v.reason
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    with AuditLog.open(str(state / "musad.db"), node="check") as log:
        r = log.verify()
        assert r.ok, r.reason
        records = list(log.iter_records())
    deploys = {e.target for e in records if e.action == "node.Deploy" and e.actor == "burst-admin"}
    assert set(returned_deploys) <= deploys
    tokens = {e.target for e in records if e.action == "token.create" and e.outcome == "ok"}
    assert set(created_tokens) <= tokens
    assert r.records == len(records) >= v.records
