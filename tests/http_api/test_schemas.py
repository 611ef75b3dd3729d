"""The HTTP request bodies carry every sampling field the engine has, under its own name, so a
new sampling parameter cannot be silently missing from the OpenAI-compatible API."""

from musaops.daemon.http.schemas import SAMPLING_FIELDS, ChatCompletionRequest, CompletionRequest


def test_every_engine_sampling_field_is_a_request_field():
    for model in (ChatCompletionRequest, CompletionRequest):
        missing = [name for name in SAMPLING_FIELDS if name not in model.model_fields]
        assert not missing, f"{model.__name__} lacks {missing}"


def test_sampling_maps_by_engine_field_name():
    req = CompletionRequest(model="m", prompt="x", temperature=0.5, top_k=3, stop="END", max_tokens=7)
    values = req.sampling()
    assert set(values) == set(SAMPLING_FIELDS)
    assert (values["temperature"], values["top_k"], values["stop"], values["max_tokens"]) == (0.5, 3, ["END"], 7)
    assert values["ignore_eos"] is None and values["seed"] is None
