"""The HTTP front door through the official `openai` client and raw httpx: chat and
completions, streaming and not, the SSE framing, and equality with gRPC Generate."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import inference_pb2, inference_pb2_grpc

from .conftest import base_url, make_key

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]


def _client(d, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url(d), api_key=key, max_retries=0, timeout=60)


async def _grpc_text(d, key: str, **kw) -> tuple[str, inference_pb2.GenerateResult]:
    async with d.channel() as ch:
        parts, result = [], None
        async for r in inference_pb2_grpc.InferenceStub(ch).Generate(
                inference_pb2.GenerateRequest(model=DEMO_MODEL_NAME, **kw),
                metadata=(("authorization", f"Bearer {key}"),)):
            if r.HasField("result"):
                result = r.result
            else:
                parts.append(r.text)
    return "".join(parts), result


def test_models_chat_and_completions_match_grpc(served):
    key = make_key(served, "team-a")
    c = _client(served, key)
    assert [m.id for m in c.models.list().data] == [DEMO_MODEL_NAME]

    chat = c.chat.completions.create(model=DEMO_MODEL_NAME, messages=MSGS, max_tokens=24, temperature=0, seed=1)
    text, result = served.call(_grpc_text(
        served, key, messages=[inference_pb2.ChatMessage(**m) for m in MSGS],
        sampling=inference_pb2.SamplingParams(max_tokens=24, temperature=0, seed=1)))
    assert chat.choices[0].message.content == text and text
    assert chat.usage.prompt_tokens == result.usage.prompt_tokens
    assert chat.usage.completion_tokens == result.usage.completion_tokens
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    assert chat.choices[0].finish_reason in ("stop", "length") and chat.id.startswith("chatcmpl-")

    done = c.completions.create(model=DEMO_MODEL_NAME, prompt="Once upon a time", max_tokens=20, temperature=0)
    text, result = served.call(_grpc_text(served, key, prompt="Once upon a time",
                                          sampling=inference_pb2.SamplingParams(max_tokens=20, temperature=0)))
    assert done.choices[0].text == text
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (
        result.usage.prompt_tokens, result.usage.completion_tokens)

    # streaming: the same text, delta by delta, usage in its own last chunk
    chunks = list(c.chat.completions.create(model=DEMO_MODEL_NAME, messages=MSGS, max_tokens=24, temperature=0,
                                            seed=1, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == chat.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == chat.usage.completion_tokens
    assert all(ch.usage is None for ch in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == chat.choices[0].finish_reason

    # without include_usage the finish chunk still says what it cost
    chunks = list(c.completions.create(model=DEMO_MODEL_NAME, prompt="Once upon a time", max_tokens=20,
                                       temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == done.choices[0].text
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens


def test_sse_framing(served):
    key = make_key(served, "team-a")
    body = {"model": DEMO_MODEL_NAME, "messages": MSGS, "max_tokens": 8, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base_url(served)}/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for e in events[:-2]:
        assert e.startswith("data: ") and "\n" not in e
        chunk = json.loads(e[len("data: "):])
        assert chunk["object"] == "chat.completion.chunk" and len(chunk["choices"]) == 1
    last = json.loads(events[-3][len("data: "):])
    assert last["choices"][0]["finish_reason"] == "length" and last["usage"]["completion_tokens"] == 8


def test_sampling_fields_reach_the_engine(served):
    """stop, seed and max_completion_tokens change the answer as on gRPC."""
    key = make_key(served, "team-a")
    c = _client(served, key)
    full = c.completions.create(model=DEMO_MODEL_NAME, prompt="abc", max_tokens=16, temperature=0,
                                extra_body={"ignore_eos": True})
    assert full.usage.completion_tokens == 16
    short = c.chat.completions.create(model=DEMO_MODEL_NAME, messages=MSGS, max_completion_tokens=3,
                                      max_tokens=9, temperature=0)
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
    a = c.completions.create(model=DEMO_MODEL_NAME, prompt="abc", max_tokens=12, temperature=1.0, seed=7)
    b = c.completions.create(model=DEMO_MODEL_NAME, prompt="abc", max_tokens=12, temperature=1.0, seed=7,
                             top_p=0.9, presence_penalty=0.5, frequency_penalty=0.5)
    again = c.completions.create(model=DEMO_MODEL_NAME, prompt="abc", max_tokens=12, temperature=1.0, seed=7)
    assert a.choices[0].text == again.choices[0].text
    assert b.usage.completion_tokens >= 1


def test_auth_off_serves_anonymous(make_daemon):
    from .conftest import deploy

    d = make_daemon()
    d.call(deploy(d))
    c = _client(d, "anything")
    # greedy: sampled, the random demo model can end early at its end-of-text token
    out = c.completions.create(model=DEMO_MODEL_NAME, prompt="x", max_tokens=2, temperature=0)
    assert out.usage.completion_tokens == 2


def test_disabled_http(make_daemon):
    d = make_daemon(**{"server.http_listen": ""})
    assert d.ctx.http is None


@pytest.mark.parametrize("listen", ["0.0.0.0:0"])
def test_plaintext_on_non_loopback_is_refused(make_daemon, listen):
    with pytest.raises(PermissionError, match="refusing plaintext HTTP"):
        make_daemon(**{"server.http_listen": listen})
