"""The real SmolLM2-135M-Instruct Q4_1 GGUF deployed on a real musad (fp32) answers, greedily,
token for token what transformers answers loading the same file with `gguf_file=` (fp32).

The file comes from starter_model.fetch(): downloaded once into the model cache
($MUSAOPS_MODEL_CACHE or ~/.cache/musa-ops/models), digest-checked; a CI cache of that
folder means no download. Without it (offline) the test is skipped with the reason.
"""

from __future__ import annotations

import pytest

from musaops.daemon import starter_model
from musaops.v1 import inference_pb2, inference_pb2_grpc, node_pb2, node_pb2_grpc

from tests.conftest import read_generate

pytestmark = pytest.mark.timeout(900)
N = 32
RAW = ["The capital of France is", "Once upon a time, a small robot", "def fibonacci(n):"]
CHAT = ["What is the capital of France? Answer in one sentence.", "Name three colours of the rainbow."]


@pytest.fixture(scope="module")
def gguf_path():
    path, why = starter_model.fetch()
    if path is None:
        pytest.skip(f"SmolLM2 GGUF unavailable: {why}")
    return path


@pytest.fixture(scope="module")
def reference(gguf_path):
    """transformers' greedy continuations (token ids and text) for every prompt."""
    pytest.importorskip("accelerate")
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(gguf_file=gguf_path.name)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw).eval()
    out = {}
    with torch.inference_mode():
        for kind, prompt in [("raw", p) for p in RAW] + [("chat", p) for p in CHAT]:
            if kind == "raw":
                ids = tok(prompt, return_tensors="pt").input_ids
            else:
                ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)["input_ids"]
            # stop where musad stops: <|im_end|> (eos) and <|endoftext|> (llama.cpp's end-of-generation list)
            gen = model.generate(ids, max_new_tokens=N, do_sample=False, eos_token_id=[2, 0], pad_token_id=2)
            new = gen[0, ids.shape[1]:].tolist()
            out[(kind, prompt)] = (ids.shape[1], new, tok.decode(new, skip_special_tokens=True))
    return out


def test_musad_matches_transformers_greedy(make_daemon, tmp_path, gguf_path, reference):
    repo = tmp_path / "models"
    repo.mkdir()
    (repo / gguf_path.name).symlink_to(gguf_path)
    d = make_daemon(models_dir=repo)

    async def run():
        async with d.channel() as ch:
            node = node_pb2_grpc.NodeStub(ch)
            listed = {m.name: m for m in (await node.ListModels(node_pb2.ListModelsRequest())).models}
            info = listed[gguf_path.name]
            assert (info.architecture, info.quantization, info.num_layers, info.hidden_size) == \
                ("LlamaForCausalLM", "Q4_1", 30, 576), info
            events = [e async for e in node.Deploy(node_pb2.DeployRequest(
                model=gguf_path.name, dtype="float32", max_batch=4, max_context=1024))]
            assert events[-1].stage == node_pb2.DEPLOY_STAGE_READY, events[-1].message
            stub = inference_pb2_grpc.InferenceStub(ch)
            got = {}
            for (kind, prompt) in reference:
                req = inference_pb2.GenerateRequest(
                    model=gguf_path.name, sampling=inference_pb2.SamplingParams(temperature=0, max_tokens=N))
                if kind == "raw":
                    req.prompt = prompt
                else:
                    req.messages.append(inference_pb2.ChatMessage(role="user", content=prompt))
                text, result = await read_generate(stub, req)
                got[(kind, prompt)] = (result.usage.prompt_tokens, result.usage.completion_tokens, text)
            return got

    got = d.call(run(), timeout=600)
    for key, (n_prompt, ids, text) in reference.items():
        assert got[key] == (n_prompt, len(ids), text), key
    assert got[("chat", CHAT[0])][2] == "The capital of France is Paris."
