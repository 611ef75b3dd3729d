"""The playground's HTTP snippets run against a real daemon with auth on: the address comes
from GetInfo's http_address (as the console reads it), the OpenAI script runs in a
subprocess with the official openai package, curl runs the command line, and both get the
text gRPC Generate gives for the same greedy request."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from musaops.app.services.convert import node_info
from musaops.app.services.snippet import SnippetRequest, curl_snippet, http_base_url, openai_snippet
from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc

from .conftest import make_key

SAMPLING = {"temperature": 0.0, "top_k": 1, "max_tokens": 6, "ignore_eos": True, "seed": 3}


def _info(d, token: str):
    async def go():
        async with d.channel() as ch:
            return await node_pb2_grpc.NodeStub(ch).GetInfo(
                node_pb2.GetInfoRequest(), metadata=(("authorization", f"Bearer {token}"),))
    return node_info(d.call(go()))


def _grpc_text(d, token: str, **kw) -> str:
    async def go():
        async with d.channel() as ch:
            stream = inference_pb2_grpc.InferenceStub(ch).Generate(
                inference_pb2.GenerateRequest(model=DEMO_MODEL_NAME, sampling=inference_pb2.SamplingParams(
                    temperature=0.0, top_k=1, max_tokens=6, ignore_eos=True, seed=3), **kw),
                metadata=(("authorization", f"Bearer {token}"),))
            return "".join([r.text async for r in stream if r.WhichOneof("kind") == "text"])
    return d.call(go())


def _request(d, info, **kw) -> SnippetRequest:
    return SnippetRequest(host="127.0.0.1", port=d.port, model=DEMO_MODEL_NAME, sampling=SAMPLING,
                          auth=info.auth_required, http_address=info.http_address, **kw)


def _env(key: str) -> dict:
    return {**os.environ, "MUSA_OPS_TOKEN": key, "NO_PROXY": "*", "no_proxy": "*"}


@pytest.mark.parametrize("kw", [dict(messages=(("user", "Say 'hi'"),)), dict(prompt="Once upon a time")])
def test_openai_snippet_runs_against_the_node(served, tmp_path, kw):
    key = make_key(served, "snippet", "client")
    info = _info(served, served.admin)   # the console's token; the client key only generates
    assert info.http_address == f"127.0.0.1:{served.ctx.http.port}"
    req = _request(served, info, **kw)
    assert http_base_url(req) == f"http://127.0.0.1:{served.ctx.http.port}/v1"
    script = tmp_path / "snippet.py"
    script.write_text(openai_snippet(req))
    r = subprocess.run([sys.executable, str(script)], env=_env(key), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "completion_tokens=6" in r.stderr
    expected = _grpc_text(served, key, **({"messages": [inference_pb2.ChatMessage(role=m[0], content=m[1])
                                                         for m in kw["messages"]]} if "messages" in kw
                                          else {"prompt": kw["prompt"]}))
    assert r.stdout.rstrip("\n") == expected and expected

    # a wrong key: one line from the script, exit 1, no traceback
    r = subprocess.run([sys.executable, str(script)], env=_env("musa_wrong"), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_snippet_runs_against_the_node(served):
    key = make_key(served, "snippet", "client")
    req = _request(served, _info(served, served.admin), messages=(("user", "Say 'hi'"),))
    r = subprocess.run(["sh", "-c", curl_snippet(req)], env=_env(key), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["usage"]["completion_tokens"] == 6
    assert answer["choices"][0]["message"]["content"] == _grpc_text(
        served, key, messages=[inference_pb2.ChatMessage(role="user", content="Say 'hi'")])


def test_no_http_front_door_is_one_sentence():
    req = SnippetRequest(host="h", port=1, model="m", prompt="x")
    with pytest.raises(ValueError, match="does not serve the OpenAI-compatible HTTP API"):
        openai_snippet(req)
    wild = SnippetRequest(host="node7", port=1, model="m", prompt="x", http_address="[::]:8000", tls=True)
    assert http_base_url(wild) == "https://node7:8000/v1"
