"""Bad input over HTTP: a 4xx with an OpenAI-shaped error and one sentence, never a
traceback, and the server keeps serving; a client that leaves mid-stream cancels its
request in the engine."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.daemon.trust.audit import AuditFilter

from .conftest import base_url, make_key

GOOD = {"model": DEMO_MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

CASES = [
    ("malformed JSON", b'{"model": "x", "messages": [', 400, None),
    ("not an object", b'[1, 2]', 400, None),
    ("wrong type", {**GOOD, "temperature": "hot"}, 400, "temperature"),
    ("wrong type in messages", {**GOOD, "messages": "hi"}, 400, "messages"),
    ("missing model", {"messages": GOOD["messages"]}, 400, "model"),
    ("unknown model", {**GOOD, "model": "no-such-model"}, 404, "model"),
    ("n > 1", {**GOOD, "n": 2}, 400, "n"),
    ("huge max_tokens", {**GOOD, "max_tokens": 10**9}, 400, None),
    ("zero max_tokens", {**GOOD, "max_tokens": 0}, 400, "max_tokens"),
    ("negative penalty", {**GOOD, "presence_penalty": -3}, 400, None),
    ("unknown role", {**GOOD, "messages": [{"role": "wizard", "content": "hi"}]}, 400, None),
    ("empty messages", {**GOOD, "messages": []}, 400, "messages"),
    ("tools", {**GOOD, "tools": [{"type": "function"}]}, 400, "tools"),
    ("body over the limit", {**GOOD, "messages": [{"role": "user", "content": "x" * (5 << 20)}]}, 413, None),
]


@pytest.mark.parametrize("name,body,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_an_openai_error(served, name, body, status, param):
    key = make_key(served, "k")
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{base_url(served)}/chat/completions", content=raw, timeout=60,
                   headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"] and len(err["message"]) < 400
    assert err["param"] == param or param is None
    ok = httpx.post(f"{base_url(served)}/chat/completions", json=GOOD, timeout=60,
                    headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200, "the server keeps serving"


def test_body_over_the_limit_without_content_length(served):
    key = make_key(served, "k")

    def chunks():
        yield b'{"model": "x", "prompt": "'
        for _ in range(6):
            yield b"y" * (1 << 20)
        yield b'"}'

    r = httpx.post(f"{base_url(served)}/completions", content=chunks(), timeout=60,
                   headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("header,code", [(None, "missing_api_key"), ("Bearer nope", "invalid_api_key"),
                                         ("Basic abc", "invalid_api_key")])
def test_keys_are_required(served, header, code):
    headers = {"Authorization": header} if header else {}
    r = httpx.post(f"{base_url(served)}/chat/completions", json=GOOD, headers=headers, timeout=60)
    assert r.status_code == 401 and r.json()["error"]["code"] == code


def test_a_viewer_key_may_not_run_inference(served):
    key = make_key(served, "v", role="viewer")
    r = httpx.post(f"{base_url(served)}/chat/completions", json=GOOD, timeout=60,
                   headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    denied = served.ctx.audit.query(AuditFilter(action="inference.Generate", outcome="denied"))
    assert [e.actor for e in denied] == ["v"]


def test_unknown_endpoint_and_method(served):
    r = httpx.get(f"{base_url(served)}/nothing", timeout=60)
    assert r.status_code == 404 and r.json()["error"]["message"]
    r = httpx.get(f"{base_url(served)}/chat/completions", timeout=60)
    assert r.status_code == 405 and r.json()["error"]["message"]


def _post_raw(served, key: str, path: str, body: bytes) -> socket.socket:
    """Sends POST /v1/<path> on a bare socket (left open: the test closes it mid-answer)."""
    s = socket.create_connection(("127.0.0.1", served.ctx.http.port))
    s.sendall(f"POST /v1/{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
              + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return s


def _close_and_expect_cancelled(served, engine, s: socket.socket) -> None:
    """Closes the client's socket of a 4000-token request: the engine drops it well before
    the end, and its audit record says cancelled, over HTTP."""
    steps_at_close = engine.stats().steps_total
    s.close()
    served.call(served.until(lambda: engine.stats().running == 0, "the engine dropped the request"))
    assert engine.stats().steps_total - steps_at_close < 4000 // 2
    records = served.call(served.audit_records("inference.Generate", 1))
    params = json.loads(records[-1].params_json)
    assert params["finish_reason"] == "cancelled" and params["transport"] == "http"
    assert params["completion_tokens"] < 4000


def test_disconnect_mid_stream_cancels_in_the_engine(served):
    key = make_key(served, "k")
    engine = served.ctx.deployments.engine_for(DEMO_MODEL_NAME)
    body = json.dumps({"model": DEMO_MODEL_NAME, "prompt": "hi", "max_tokens": 4000, "ignore_eos": True,
                       "stream": True}).encode()
    s = _post_raw(served, key, "completions", body)
    got = b""
    while got.count(b"data: ") < 3:
        got += s.recv(65536)
    assert engine.stats().running == 1
    _close_and_expect_cancelled(served, engine, s)


@pytest.mark.parametrize("path,extra", [("completions", {"prompt": "hi"}),
                                        ("chat/completions", {"messages": [{"role": "user", "content": "hi"}]})])
def test_disconnect_while_waiting_for_a_whole_answer_cancels_in_the_engine(served, path, extra):
    key = make_key(served, "k")
    engine = served.ctx.deployments.engine_for(DEMO_MODEL_NAME)
    body = json.dumps({"model": DEMO_MODEL_NAME, "max_tokens": 4000, "ignore_eos": True, **extra}).encode()
    s = _post_raw(served, key, path, body)
    served.call(served.until(lambda: engine.stats().running == 1, "the engine runs the request"))
    _close_and_expect_cancelled(served, engine, s)
    # the server keeps serving (greedy: sampled, the random demo model can end early at end-of-text)
    r = httpx.post(f"{base_url(served)}/{path}", headers={"Authorization": f"Bearer {key}"},
                   json={"model": DEMO_MODEL_NAME, "max_tokens": 2, "temperature": 0, **extra}, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
