"""A client that leaves mid-stream is counted with the prompt it cost: its usage row and audit
record hold the prompt's token count (as a finished request with the same prompt reports it)
and the completion tokens streamed before it left."""

from __future__ import annotations

import json

import httpx
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.daemon.usage import UsageFilter

from .conftest import base_url, make_key

PROMPT = "Once upon a time there was a small daemon that counted every token it was given"


@pytest.mark.parametrize("path,extra", [("completions", {"prompt": PROMPT}),
                                        ("chat/completions", {"messages": [{"role": "user", "content": PROMPT}]})])
def test_client_gone_mid_stream_is_counted_with_its_prompt(served, path, extra):
    engine = served.ctx.deployments.engine_for(DEMO_MODEL_NAME)
    done_key, gone_key = make_key(served, "done"), make_key(served, "gone")
    r = httpx.post(f"{base_url(served)}/{path}", headers={"Authorization": f"Bearer {done_key}"},
                   json={"model": DEMO_MODEL_NAME, "max_tokens": 2, **extra}, timeout=60)
    assert r.status_code == 200, r.text
    prompt_tokens = r.json()["usage"]["prompt_tokens"]
    assert prompt_tokens > 10

    body = {"model": DEMO_MODEL_NAME, "max_tokens": 4000, "ignore_eos": True, "stream": True, **extra}
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{base_url(served)}/{path}", json=body,
                           headers={"Authorization": f"Bearer {gone_key}"}) as resp:
            assert resp.status_code == 200
            events = 0
            for line in resp.iter_lines():
                events += line.startswith("data: ")
                if events == 3:
                    break
    served.call(served.until(lambda: engine.stats().running == 0, "the engine dropped the request"))

    def gone_bucket():
        return served.ctx.usage.query(UsageFilter(key="gone"))
    served.call(served.until(lambda: gone_bucket(), "the cancelled request's usage row"))
    (bucket,) = gone_bucket()
    assert bucket.requests == 1 and bucket.prompt_tokens == prompt_tokens
    assert 0 < bucket.completion_tokens < 4000
    (done,) = served.ctx.usage.query(UsageFilter(key="done"))
    assert done.prompt_tokens == prompt_tokens

    records = served.call(served.audit_records("inference.Generate", 2))
    cancelled = [json.loads(x.params_json) for x in records if x.actor == "gone"]
    assert len(cancelled) == 1, records
    params = cancelled[0]
    assert params["finish_reason"] == "cancelled" and params["transport"] == "http"
    assert params["prompt_tokens"] == prompt_tokens
    assert params["completion_tokens"] == bucket.completion_tokens
