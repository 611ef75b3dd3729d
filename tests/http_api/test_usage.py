"""Usage accounting: rows equal what the clients counted (KeyUsage.Query, the CSV/JSONL
export, /metrics); kill -9 mid-burst and restart: usage and audit hold every answer a
client received, nothing twice; PostgreSQL by URL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import grpc
import openai
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.daemon.trust.audit import AuditFilter, AuditLog
from musaops.daemon.usage import UsageFilter, export_text
from musaops.v1 import keys_pb2, keys_pb2_grpc

from .conftest import SMALL, base_url, deploy, make_key

MUSAD = [sys.executable, "-m", "musaops.daemon.cli"]


def _burst(d, key: str, n: int) -> tuple[int, int, int]:
    c = openai.OpenAI(base_url=base_url(d), api_key=key, max_retries=0, timeout=60)
    p = t = 0
    for i in range(n):
        if i % 2:
            r = c.completions.create(model=DEMO_MODEL_NAME, prompt=f"p{i}", max_tokens=3 + i % 4)
        else:
            r = c.chat.completions.create(model=DEMO_MODEL_NAME, max_tokens=3 + i % 4,
                                          messages=[{"role": "user", "content": f"q{i}"}])
        p += r.usage.prompt_tokens
        t += r.usage.completion_tokens
    return n, p, t


def test_usage_equals_what_clients_counted(served):
    a = _burst(served, make_key(served, "team-a"), 6)
    b = _burst(served, make_key(served, "team-b"), 4)

    async def query(**kw):
        async with served.channel() as ch:
            stub = keys_pb2_grpc.KeyUsageStub(ch)
            md = (("authorization", f"Bearer {served.admin}"),)
            out, token = [], ""
            while True:
                page = await stub.Query(keys_pb2.UsageQuery(page_token=token, limit=1, **kw), metadata=md)
                out += page.buckets
                token = page.next_page_token
                if not token:
                    return out

    for name, (n, p, t) in (("team-a", a), ("team-b", b)):
        buckets = served.call(query(key=name))
        assert sum(x.requests for x in buckets) == n
        assert sum(x.prompt_tokens for x in buckets) == p
        assert sum(x.completion_tokens for x in buckets) == t
        assert all(x.model == DEMO_MODEL_NAME and x.errors == 0 for x in buckets)
    assert {x.key for x in served.call(query())} >= {"team-a", "team-b"}

    rows = list(csv.DictReader(io.StringIO(export_text(served.ctx.usage, "csv", UsageFilter(key="team-a")))))
    assert sum(int(r["completion_tokens"]) for r in rows) == a[2]
    lines = export_text(served.ctx.usage, "jsonl", UsageFilter(key="team-b")).splitlines()
    assert sum(json.loads(x)["requests"] for x in lines) == b[0]

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{served.ctx.metrics.port}/metrics").read().decode()
    assert f'musad:key_completion_tokens_total{{key="team-a"}} {float(a[2])}' in metrics
    assert f'musad:key_requests_total{{key="team-b",outcome="ok"}} {float(b[0])}' in metrics

    # the Keys service lists them with their last use; the CLI export reads the same rows
    async def keys():
        async with served.channel() as ch:
            return (await keys_pb2_grpc.KeysStub(ch).List(
                keys_pb2.ListKeysRequest(), metadata=(("authorization", f"Bearer {served.admin}"),))).keys
    listed = {k.name: k for k in served.call(keys())}
    assert listed["team-a"].role == "client" and listed["team-a"].last_used_unix_ms > 0


def test_client_key_cannot_manage_keys_or_read_usage(served):
    key = make_key(served, "c")

    async def scenario():
        async with served.channel() as ch:
            md = (("authorization", f"Bearer {key}"),)
            for call in (keys_pb2_grpc.KeysStub(ch).List(keys_pb2.ListKeysRequest(), metadata=md),
                         keys_pb2_grpc.KeyUsageStub(ch).Query(keys_pb2.UsageQuery(), metadata=md)):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    served.call(scenario())


def test_created_secret_is_shown_once_and_works(served):
    async def create():
        async with served.channel() as ch:
            return await keys_pb2_grpc.KeysStub(ch).Create(keys_pb2.CreateKeyRequest(
                name="app", role="client", limits=keys_pb2.KeyLimits(rpm=50, models=[DEMO_MODEL_NAME])),
                metadata=(("authorization", f"Bearer {served.admin}"),))
    made = served.call(create())
    assert made.secret.startswith("musa_") and made.key.limits.rpm == 50
    assert _burst(served, made.secret, 1)[0] == 1


def test_postgres_usage(make_daemon, postgres_url):
    import uuid

    d = make_daemon(**{"auth.required": True, "storage.db_url": postgres_url})
    admin = make_key(d, f"pg-admin-{uuid.uuid4().hex[:8]}", "admin")
    d.call(deploy(d, token=admin))
    name = f"pg-{uuid.uuid4().hex[:8]}"
    n, p, t = _burst(d, make_key(d, name), 3)
    b = d.ctx.usage.query(UsageFilter(key=name))
    assert (sum(x.requests for x in b), sum(x.prompt_tokens for x in b), sum(x.completion_tokens for x in b)) == (n, p, t)


# -- kill -9 -----------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(MUSAD + list(args), capture_output=True, text=True, timeout=120)


def _start(state, models) -> tuple[subprocess.Popen, int, int]:
    p = subprocess.Popen(MUSAD + ["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "",
                                  "--http-listen", "127.0.0.1:0", "--state-dir", str(state),
                                  "--models", str(models), "--device", "cpu"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    grpc_port = http_port = 0
    for line in p.stderr:   # the daemon logs both ports once it serves
        if m := re.search(r"musad serving on port (\d+)", line):
            grpc_port = int(m.group(1))
        if m := re.search(r"HTTP serving on port (\d+)", line):
            http_port = int(m.group(1))
        if grpc_port and http_port:
            threading.Thread(target=p.stderr.read, daemon=True).start()
            return p, grpc_port, http_port
    raise AssertionError(f"musad serve exited ({p.wait()}) before serving")


@pytest.mark.timeout(240)
def test_kill_9_mid_burst_counts_every_answer_once(tmp_path, demo_model_dir):
    state, models = tmp_path / "state", demo_model_dir.parent
    for name, role in (("root", "admin"), ("burst", "client")):
        assert _cli("token", "create", "--name", name, "--role", role, "--out", str(tmp_path / name),
                    "--state-dir", str(state)).returncode == 0
    admin, key = ((tmp_path / n).read_text().strip() for n in ("root", "burst"))
    proc, gport, hport = _start(state, models)

    class D:   # what deploy() needs
        def channel(self):
            return grpc.aio.insecure_channel(f"127.0.0.1:{gport}")
    asyncio.run(deploy(D(), token=admin))

    answers: dict[str, tuple[int, int]] = {}
    lock = threading.Lock()

    def worker(w: int) -> None:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{hport}/v1", api_key=key, max_retries=0, timeout=30)
        for i in range(100000):
            try:
                r = c.completions.create(model=DEMO_MODEL_NAME, prompt=f"w{w} i{i}", max_tokens=4)
            except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError):
                return   # the daemon is gone
            with lock:
                answers[r.id] = (r.usage.prompt_tokens, r.usage.completion_tokens)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    while len(answers) < 60:   # mid-burst, by progress
        assert proc.poll() is None
        threading.Event().wait(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for t in threads:
        t.join()
    received = dict(answers)

    proc, gport, hport = _start(state, models)   # the restarted daemon opens the same database
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)

    from musaops.daemon.trust.audit import open_database
    from musaops.daemon.usage import UsageLog, usage_requests

    engine = open_database(str(state / "musad.db"))
    import sqlalchemy as sa
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(usage_requests).where(usage_requests.c.key == "burst"))}
    engine.dispose()
    with AuditLog.open(str(state / "musad.db"), node="check") as log:
        assert log.verify().ok
        audited = [json.loads(e.params_json) for e in log.iter_records(AuditFilter(action="inference.Generate"))
                   if e.actor == "burst" and e.outcome == "ok"]
    by_id = {a["request_id"]: a for a in audited}
    assert len(by_id) == len(audited), "no request audited twice"
    for rid, (p, c) in received.items():   # every answer a client received is counted, as it was told
        assert (rows[rid].prompt_tokens, rows[rid].completion_tokens, rows[rid].outcome) == (p, c, "ok")
        assert (by_id[rid]["prompt_tokens"], by_id[rid]["completion_tokens"]) == (p, c)
    # at most the requests in flight at the kill were recorded without their answer arriving
    assert len(rows) - len(received) <= len(threads)
    # usage and audit are two writes: they may differ only on requests whose answer never left
    ok_rows = {r for r, row in rows.items() if row.outcome == "ok"}
    differ = ok_rows ^ set(by_id)
    assert not differ & set(received) and len(differ) <= len(threads)
