"""A model's chat template cannot stall or jam the daemon: a template that renders 30 MB,
one with a nested loop and one asking for range(10**6) each fail their request with
INVALID_ARGUMENT (audited as failed, with the reason) while GetInfo and health go on
answering; health turns NOT_SERVING while a pool is jammed; SIGTERM ends a jammed daemon."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from musaops.daemon.watchdog import Watchdog
from musaops.v1 import inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc

pytestmark = pytest.mark.timeout(240)
SMALL = dict(max_batch=2, max_context=256, kv_cache_fraction=0.05)
TEMPLATES = {
    "huge": "{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}",   # ~30 MB
    "nested": "{% for i in range(16000) %}{% for j in range(16000) %}{% endfor %}{% endfor %}x",
    "range": "{% for i in range(10**6) %}{{ i }}{% endfor %}",
}


def _model_with_template(demo_model_dir, repo, name, template):
    d = shutil.copytree(demo_model_dir, repo / name)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = template
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


async def test_hostile_templates_are_invalid_argument_and_the_node_keeps_answering(make_daemon, tmp_path,
                                                                                    demo_model_dir):
    repo = tmp_path / "repo"
    for name, template in TEMPLATES.items():
        _model_with_template(demo_model_dir, repo, name, template)
    d = make_daemon(models_dir=repo, **{"engine.template_timeout_s": 1.0})
    async with d.channel() as ch:
        node = node_pb2_grpc.NodeStub(ch)
        for name in TEMPLATES:
            last = [p async for p in node.Deploy(node_pb2.DeployRequest(model=name, **SMALL))][-1]
            assert last.stage == node_pb2.DEPLOY_STAGE_READY, last.message
        infer = inference_pb2_grpc.InferenceStub(ch)
        health = health_pb2_grpc.HealthStub(ch)

        async def generate(name):
            req = inference_pb2.GenerateRequest(model=name, messages=[
                inference_pb2.ChatMessage(role="user", content="y" * 300)])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                [m async for m in infer.Generate(req)]
            return err.value

        calls = [asyncio.ensure_future(generate(name)) for name in TEMPLATES for _ in range(4)]
        while not all(c.done() for c in calls):   # the node answers while the templates render
            info = await node.GetInfo(node_pb2.GetInfoRequest(), timeout=10)
            assert info.hostname
            h = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert h.status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(0.05)
        errors = [c.result() for c in calls]
        for e in errors:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
            assert "chat template" in e.details() and "Traceback" not in e.details()
        details = {e.details() for e in errors}
        assert any("characters" in x for x in details) and any("more than 1 s" in x for x in details)
        assert any("1,000,000" in x for x in details)
    records = await d.audit_records("inference.Generate", len(calls))
    assert len(records) == len(calls)
    assert {r.outcome for r in records} == {"failed"}
    assert all("chat template" in r.error for r in records)


async def test_health_is_not_serving_while_a_pool_is_jammed():
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    pool = ThreadPoolExecutor(1)
    release = threading.Event()
    dog = Watchdog(health, [""], {"jammed": lambda: pool, "default": lambda: None}, interval_s=0.05, stall_s=0.3)
    dog.start()
    try:
        pool.submit(release.wait, 60)
        for _ in range(3000):   # a 30 s deadline, for a loaded machine
            if dog.jammed:
                break
            await asyncio.sleep(0.01)
        assert "jammed threads ran nothing" in dog.jammed
        resp = await health.Check(health_pb2.HealthCheckRequest(service=""), None)
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
        release.set()
        for _ in range(3000):   # a 30 s deadline, for a loaded machine
            if not dog.jammed:
                break
            await asyncio.sleep(0.01)
        resp = await health.Check(health_pb2.HealthCheckRequest(service=""), None)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        release.set()
        await dog.stop()
        pool.shutdown()


def test_sigterm_ends_a_daemon_whose_threads_are_jammed(tmp_path, demo_model_dir):
    """Templates that render for ten minutes hold every worker; SIGTERM still ends the process
    (after server.grace_seconds and the hard-exit margin), not when the renders end."""
    repo = tmp_path / "models"
    _model_with_template(demo_model_dir, repo, "nested", TEMPLATES["nested"])
    (tmp_path / "musad.toml").write_text(
        "[auth]\nrequired = false\n[server]\ngrace_seconds = 1\n[engine]\ntemplate_timeout_s = 600\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "musaops.daemon.cli", "serve", "--config", str(tmp_path / "musad.toml"),
         "--listen", "127.0.0.1:0", "--metrics-listen", "", "--http-listen", "", "--device", "cpu",
         "--state-dir", str(tmp_path / "state"), "--models", str(repo)],
        stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            m = re.search(r"listening on .* \(port (\d+)\)", line)
            if m:
                port = int(m.group(1))
                break
        assert port
        lines: list[str] = []

        def read_stderr() -> None:
            for line in proc.stderr:
                lines.append(line)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        from musaops.daemon.engine import workers

        async def jam():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                node = node_pb2_grpc.NodeStub(ch)
                last = [p async for p in node.Deploy(node_pb2.DeployRequest(model="nested", **SMALL))][-1]
                assert last.stage == node_pb2.DEPLOY_STAGE_READY, last.message
                infer = inference_pb2_grpc.InferenceStub(ch)
                health = health_pb2_grpc.HealthStub(ch)
                req = inference_pb2.GenerateRequest(model="nested", messages=[
                    inference_pb2.ChatMessage(role="user", content="hi")])
                calls = [infer.Generate(req) for _ in range(workers.WORKERS + 2)]
                # The renders hold every prompt worker once the watchdog (stall_s = 10 s) sees
                # the request pool run nothing: health NOT_SERVING, and its warning names the pool.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 90
                status = None
                while loop.time() < deadline:
                    status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status
                    if (status == health_pb2.HealthCheckResponse.NOT_SERVING
                            and any("request threads ran nothing" in x for x in lines)):
                        break
                    await asyncio.sleep(0.2)
                assert status == health_pb2.HealthCheckResponse.NOT_SERVING, "the renders never jammed the pool"
                assert any("request threads ran nothing" in x for x in lines), "".join(lines[-20:])
                proc.send_signal(signal.SIGTERM)
                for c in calls:
                    c.cancel()

        asyncio.run(jam())
        rc = proc.wait(timeout=60)   # the renders would run for 600 s
        reader.join(timeout=10)      # the pipe closed with the process
        assert rc == 1, rc
        assert any("shutdown took longer than" in x for x in lines), "".join(lines[-20:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
