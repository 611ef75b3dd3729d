"""The console's sampling table agrees with the daemon: same fields, same defaults."""

from __future__ import annotations

import dataclasses

import pytest

from musaops.app.core import GenerateSpec, Sampling
from musaops.app.core.sampling import SAMPLING_NAMES, SAMPLING_PARAMS
from musaops.app.services.convert import generate_request
from musaops.daemon.config import EngineConfig
from musaops.daemon.engine.api import InvalidRequestError, SamplingParams, sampling_from_fields
from musaops.daemon.services.inference_convert import sampling_from_pb
from musaops.v1 import inference_pb2


def test_the_console_names_every_field_of_the_proto_and_the_daemon_in_order() -> None:
    proto = tuple(f.name for f in inference_pb2.SamplingParams.DESCRIPTOR.fields)
    daemon = tuple(f.name for f in dataclasses.fields(SamplingParams))
    assert SAMPLING_NAMES == proto == daemon


def test_console_defaults_are_the_daemons() -> None:
    daemon = SamplingParams()
    for p in SAMPLING_PARAMS:
        assert p.default == getattr(daemon, p.name), p.name


def test_sending_the_console_defaults_is_the_same_as_sending_nothing() -> None:
    """Through the real request builder and the daemon's converter: every default set
    explicitly gives the daemon the same SamplingParams as a request with nothing set."""
    limits = EngineConfig()
    explicit = Sampling(**{p.name: p.default for p in SAMPLING_PARAMS})
    sent = generate_request(GenerateSpec("m", prompt="x", sampling=explicit)).sampling
    unset = generate_request(GenerateSpec("m", prompt="x")).sampling
    assert sent.HasField("temperature") and not unset.HasField("temperature")
    assert sampling_from_pb(sent, limits) == sampling_from_pb(unset, limits) == SamplingParams()


def test_sampling_from_fields_serves_any_transport() -> None:
    """The proto-free entry point: defaults fill the gaps, bad values get a sentence."""
    got = sampling_from_fields({"temperature": 0, "stop": ["\n"], "seed": None}, max_tokens_limit=64,
                               max_stop_strings=4)
    assert got == SamplingParams(temperature=0.0, stop=("\n",), max_tokens=64)
    with pytest.raises(InvalidRequestError, match="top_p must be in"):
        sampling_from_fields({"top_p": 0}, max_tokens_limit=64, max_stop_strings=4)
    with pytest.raises(InvalidRequestError, match="Unknown sampling parameter"):
        sampling_from_fields({"temprature": 1}, max_tokens_limit=64, max_stop_strings=4)


def test_sampling_rejects_names_it_does_not_know() -> None:
    with pytest.raises(TypeError, match="temprature"):
        Sampling(temprature=1.0)
    s = Sampling(temperature=0.0, max_tokens=8)
    assert s.temperature == 0.0 and s.top_k is None and s.stop == () and dict(s) == {"temperature": 0.0,
                                                                                    "max_tokens": 8}
