"""Each per-key limit answers 429 (HTTP) / RESOURCE_EXHAUSTED (gRPC) at the right moment and
lets the key in again after its window; a disallowed model is 404 as if absent. The
limiter's clocks are replaced by hand-moved ones so a minute or a day passes at once."""

from __future__ import annotations

import time

import grpc
import httpx
import openai
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import inference_pb2, inference_pb2_grpc, keys_pb2, keys_pb2_grpc

from .conftest import base_url, make_key


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clocks(served):
    lim = served.ctx.inference.limiter
    # 01:00 UTC today: usage rows carry the real time, which is later today
    mono, wall = Clock(1000.0), Clock(time.time() // 86400 * 86400 + 3600)
    lim.clock, lim.wall = mono, wall
    return mono, wall


def _client(d, key):
    return openai.OpenAI(base_url=base_url(d), api_key=key, max_retries=0, timeout=60)


def _ask(c, n=4):
    return c.completions.create(model=DEMO_MODEL_NAME, prompt="hi", max_tokens=n, temperature=0,
                                extra_body={"ignore_eos": True})


def test_rpm_burst_then_reset(served, clocks):
    mono, _ = clocks
    c = _client(served, make_key(served, "rpm", rpm=3))
    for _ in range(3):
        _ask(c)
    with pytest.raises(openai.RateLimitError) as err:
        _ask(c)
    assert err.value.body["code"] == "rate_limit_exceeded" and "3 requests per minute" in err.value.body["message"]
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    mono.t += 61
    _ask(c)


def test_tpm(served, clocks):
    mono, _ = clocks
    c = _client(served, make_key(served, "tpm", tpm=20))
    used = 0
    while used < 20:   # admitted while under the limit; the request that crosses it still runs
        r = _ask(c, 8)
        used += r.usage.total_tokens
    with pytest.raises(openai.RateLimitError) as err:
        _ask(c)
    assert err.value.body["code"] == "rate_limit_exceeded" and "tokens per minute" in err.value.body["message"]
    mono.t += 61
    _ask(c)


def test_concurrency(served, clocks):
    key = make_key(served, "conc", concurrent=1)
    c = _client(served, key)
    body = {"model": DEMO_MODEL_NAME, "prompt": "hi", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{base_url(served)}/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}, timeout=60) as r:
        next(r.iter_lines())   # the first one is in flight
        with pytest.raises(openai.RateLimitError) as err:
            _ask(c)
        assert "in flight" in err.value.body["message"]
    served.call(served.until(lambda: served.ctx.inference.limiter.in_flight("conc") == 0, "stream released"))
    _ask(c)


def test_daily_quota_survives_restart_and_renews_at_midnight(served, clocks):
    _, wall = clocks
    c = _client(served, make_key(served, "daily", daily_tokens=10))
    while True:
        try:
            _ask(c, 4)
        except openai.RateLimitError as exc:
            err = exc
            break
    assert err.status_code == 429 and err.body["code"] == "insufficient_quota"
    assert err.body["type"] == "insufficient_quota"
    assert int(err.response.headers["retry-after"]) == 23 * 3600   # 01:00 -> midnight
    # the limiter forgets (as after a restart): the day's tokens come back from the usage store
    served.ctx.inference.limiter._keys.clear()
    with pytest.raises(openai.RateLimitError):
        _ask(c)
    wall.t += 23 * 3600
    _ask(c)


def test_disallowed_model_is_absent(served, clocks):
    key = make_key(served, "narrow", models=["other-model"])
    c = _client(served, key)
    assert c.models.list().data == []
    with pytest.raises(openai.NotFoundError) as hidden:
        _ask(c)
    with pytest.raises(openai.NotFoundError) as absent:
        c.completions.create(model="no-such-model", prompt="hi", max_tokens=2)
    assert hidden.value.body["code"] == absent.value.body["code"] == "model_not_found"
    assert hidden.value.body["message"].replace(DEMO_MODEL_NAME, "X") == \
        absent.value.body["message"].replace("no-such-model", "X")


def test_grpc_gets_resource_exhausted_and_admin_changes_limits_live(served, clocks):
    key = make_key(served, "grpc-rpm", rpm=1)

    async def scenario():
        async with served.channel() as ch:
            gen = inference_pb2_grpc.InferenceStub(ch).Generate
            req = inference_pb2.GenerateRequest(model=DEMO_MODEL_NAME, prompt="hi",
                                                sampling=inference_pb2.SamplingParams(max_tokens=2))
            md = (("authorization", f"Bearer {key}"),)
            [r async for r in gen(req, metadata=md)]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                [r async for r in gen(req, metadata=md)]
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "1 requests per minute" in err.value.details()
            # an admin raises the limit over gRPC; it holds within a second, no restart
            keys = keys_pb2_grpc.KeysStub(ch)
            admin = (("authorization", f"Bearer {served.admin}"),)
            info = await keys.SetLimits(keys_pb2.SetKeyLimitsRequest(
                name="grpc-rpm", limits=keys_pb2.KeyLimits(rpm=100)), metadata=admin)
            assert info.limits.rpm == 100
            served.ctx.auth.refresh()
            [r async for r in gen(req, metadata=md)]

    served.call(scenario())
