"""The prefix cache is shared per caller by default: one token's requests cannot time another
token's prompts through it (engine.prefix_cache_scope = "model" shares it across callers)."""

from __future__ import annotations

import grpc
import pytest

from musaops.daemon.demo_model import DEMO_MODEL_NAME
from musaops.v1 import inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc

PROMPT = "You are the assistant of the network operations centre. Summarise the open tickets. " * 3


async def _hits_per_request(d, callers: list[str]) -> list[int]:
    tokens = {name: d.ctx.auth.create(name, "operator") for name in set(callers)}
    out = []
    async with grpc.aio.insecure_channel(d.address) as ch:
        md = lambda name: (("authorization", f"Bearer {tokens[name]}"),)  # noqa: E731
        async for _ in node_pb2_grpc.NodeStub(ch).Deploy(node_pb2.DeployRequest(
                model=DEMO_MODEL_NAME, max_batch=2, max_context=256, kv_cache_fraction=0.02), metadata=md(callers[0])):
            pass
        engine = d.ctx.deployments.engine_for(DEMO_MODEL_NAME)
        for name in callers:
            before = engine.stats().prefix_cache_hit_tokens_total
            async for _ in inference_pb2_grpc.InferenceStub(ch).Generate(inference_pb2.GenerateRequest(
                    model=DEMO_MODEL_NAME, prompt=PROMPT,
                    sampling=inference_pb2.SamplingParams(max_tokens=4, temperature=0)), metadata=md(name)):
                pass
            out.append(engine.stats().prefix_cache_hit_tokens_total - before)
    return out


@pytest.mark.timeout(120)
async def test_callers_do_not_share_cached_prefixes_by_default(make_daemon):
    d = make_daemon(**{"auth.required": True})
    first_a, first_b, again_a, again_b = await _hits_per_request(d, ["app-a", "app-b", "app-a", "app-b"])
    assert first_a == 0 and first_b == 0
    assert again_a > 0 and again_b > 0


@pytest.mark.timeout(120)
async def test_model_scope_shares_cached_prefixes_across_callers(make_daemon):
    d = make_daemon(**{"auth.required": True, "engine.prefix_cache_scope": "model"})
    first_a, first_b = await _hits_per_request(d, ["app-a", "app-b"])
    assert first_a == 0 and first_b > 0
