"""`python -m musaops.daemon.devrun` (make run-daemon): demo model written, daemon healthy,
the starter model (SmolLM2, when it could be fetched; else the random demo model) deployed; Ctrl-C (SIGINT) stops the daemon with SIGTERM, which lets a Generate that is
still running finish, and everything exits 0.

One test, because each start imports torch in a fresh daemon process (seconds)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import grpc
import pytest

from musaops.daemon import starter_model
from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import common_pb2, inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(240)
def test_devrun_serves_the_deployed_demo_model(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "musaops.daemon.devrun", "--demo-dir", str(tmp_path / "models"),
         "--state-dir", str(tmp_path / "state"), "--listen", address, "--metrics-listen", "", "--http-listen", "", "--device", "cpu"],
        stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        assert proc.poll() is None, "".join(lines)
        token_file = tmp_path / "state" / "devrun-admin.token"
        metadata = (("authorization", f"Bearer {token_file.read_text().strip()}"),) if token_file.exists() else None
        with grpc.insecure_channel(address) as ch:
            models = node_pb2_grpc.NodeStub(ch).ListModels(node_pb2.ListModelsRequest(), metadata=metadata).models
            deployed = starter_model.FILE_NAME if starter_model.cached() else DEMO_MODEL_NAME
            assert DEMO_MODEL_NAME in {m.name for m in models}
            assert [m.name for m in models if m.state == common_pb2.MODEL_STATE_READY] == [deployed]
            # the stop arrives mid-stream (SIGINT follows the first token); 200 tokens end well inside
            # the 30 s drain even on a loaded machine (500 once ran past it there)
            gen = inference_pb2_grpc.InferenceStub(ch).Generate(inference_pb2.GenerateRequest(
                model=deployed, prompt="Hello",
                sampling=inference_pb2.SamplingParams(max_tokens=200, ignore_eos=True, temperature=0)),
                metadata=metadata)
            first = next(gen)
            proc.send_signal(signal.SIGINT)
            chunks = [first, *gen]
            assert gen.code() == grpc.StatusCode.OK
        result = chunks[-1].result
        assert result.finish_reason == inference_pb2.FINISH_REASON_LENGTH, result
        assert result.usage.completion_tokens == 200
        assert sum(c.tokens for c in chunks[:-1]) == 200
        _, rest = proc.communicate(timeout=60)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines)
    assert "stopping musad" in "".join(lines)
    assert (tmp_path / "models" / DEMO_MODEL_NAME / "config.json").is_file()
