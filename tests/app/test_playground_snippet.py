"""The playground's "Copy as Python" snippet: it compiles, and the request it builds is the
request the console would send. (Running it against a live daemon is in
test_playground_live.py.)"""

from __future__ import annotations

import pytest

from musaops.app.services.snippet import SnippetRequest, python_snippet
from musaops.v1 import inference_pb2


def _load(source: str) -> dict:
    namespace: dict = {"__name__": "snippet_under_test"}
    exec(compile(source, "<snippet>", "exec"), namespace)
    return namespace


def test_chat_request_round_trips_every_sampling_field() -> None:
    req = SnippetRequest(
        host="127.0.0.1",
        port=50123,
        model="demo-llama",
        messages=(("system", "Be brief."), ("user", 'Say "hi"\nand stop.')),
        sampling={
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 40,
            "repetition_penalty": 1.1,
            "frequency_penalty": 0.5,
            "presence_penalty": -0.25,
            "seed": 1234,
            "max_tokens": 64,
            "stop": ["\n\n", "END"],
        },
    )
    ns = _load(python_snippet(req))
    assert ns["TARGET"] == "127.0.0.1:50123"
    expected = inference_pb2.GenerateRequest(
        model="demo-llama",
        messages=[
            inference_pb2.ChatMessage(role="system", content="Be brief."),
            inference_pb2.ChatMessage(role="user", content='Say "hi"\nand stop.'),
        ],
        sampling=inference_pb2.SamplingParams(
            temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1,
            frequency_penalty=0.5, presence_penalty=-0.25, seed=1234, max_tokens=64,
            stop=["\n\n", "END"],
        ),
    )
    assert ns["build_request"]() == expected


def test_unset_fields_stay_unset_and_raw_prompt_is_used() -> None:
    source = python_snippet(
        SnippetRequest(host="::1", port=7, model="m", prompt="Once upon", sampling={"max_tokens": 8})
    )
    ns = _load(source)
    request = ns["build_request"]()
    assert ns["TARGET"] == "[::1]:7"
    assert request.prompt == "Once upon" and not request.messages
    assert not request.sampling.HasField("temperature")
    assert request.sampling.max_tokens == 8
    assert "Path(" not in source and "ssl_channel_credentials" not in source


def test_tls_files_and_token_come_from_outside_the_snippet(tmp_path) -> None:
    source = python_snippet(
        SnippetRequest(host="node1", port=443, model="m", prompt="x", tls=True,
                       tls_ca="/etc/ca.pem", auth=True)
    )
    assert "secure_channel" in source and "Path('/etc/ca.pem')" in source
    assert "MUSA_OPS_TOKEN" in source
    compile(source, "<snippet>", "exec")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "", "prompt": "x"}, "model"),
        ({"model": "m"}, "neither a prompt"),
        ({"model": "m", "prompt": "x", "sampling": {"temprature": 1.0}}, "temprature"),
    ],
)
def test_incomplete_requests_are_refused_with_a_sentence(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        python_snippet(SnippetRequest(host="h", port=1, **kwargs))
