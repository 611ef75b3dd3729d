"""The sampling parameters the console sends: one row each, in proto order.

The one console-side list of them: the playground builds its controls, presets and request
from it, "Copy as code" writes the fields it names, and the request builder
(services/convert.generate_request) copies a `Sampling` onto the proto by these names.
`default` is what the daemon uses when the field is left unset (the proto's documented
default, daemon/engine/api.SamplingParams; a test holds the two equal); the playground
starts at it. A new parameter is one row here (plus the proto field and the daemon's
SamplingParams field and maths).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping


@dataclass(frozen=True)
class SamplingParam:
    name: str            # the proto SamplingParams field
    label: str           # the playground's label
    kind: str            # float | int | seed (an optional int) | bool | stops
    default: Any         # the daemon's value when unset
    lo: float = 0.0      # the control's range and step
    hi: float = 0.0
    step: float = 1.0
    special: str = ""    # shown at the control's minimum, which then means "unset"
    tooltip: str = ""


SAMPLING_PARAMS: tuple[SamplingParam, ...] = (
    SamplingParam("temperature", "Temperature", "float", 1.0, 0.0, 2.0, 0.05),
    SamplingParam("top_p", "Top-p", "float", 1.0, 0.0, 1.0, 0.05),
    SamplingParam("top_k", "Top-k", "int", 0, 0, 1000, 1, special="off"),
    SamplingParam("repetition_penalty", "Repetition penalty", "float", 1.0, 0.0, 2.0, 0.05, special="default"),
    SamplingParam("frequency_penalty", "Frequency penalty", "float", 0.0, -2.0, 2.0, 0.1),
    SamplingParam("presence_penalty", "Presence penalty", "float", 0.0, -2.0, 2.0, 0.1),
    SamplingParam("seed", "Seed", "seed", None, 0, 2**31 - 1, 1),
    SamplingParam("max_tokens", "Max tokens", "int", 256, 1, 32768, 1),
    SamplingParam("stop", "Stop sequences", "stops", ()),
    SamplingParam("ignore_eos", "Ignore EOS (run to max tokens)", "bool", False,
                  tooltip="Keep generating past the end-of-sequence token, as benchmarks do"),
)
SAMPLING_NAMES = tuple(p.name for p in SAMPLING_PARAMS)
PARAMS_BY_NAME = {p.name: p for p in SAMPLING_PARAMS}
# What reading a parameter that was not set gives: None where the proto field has presence,
# else the proto's zero (which the daemon reads as "the default").
_UNSET = {"max_tokens": 0, "ignore_eos": False, "stop": ()}


class Sampling(Mapping[str, Any]):
    """Sampling parameters of one request by name; a parameter not set (or None) is left to
    the daemon's default. `Sampling(temperature=0.0, max_tokens=8)`; `s.temperature`."""

    __slots__ = ("_values",)

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(SAMPLING_NAMES))
        if unknown:
            raise TypeError(f"unknown sampling parameter(s): {', '.join(unknown)}")
        values = {k: (tuple(v) if k == "stop" else v) for k, v in values.items() if v is not None}
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        if name in PARAMS_BY_NAME:
            return self._values.get(name, _UNSET.get(name))
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Sampling is immutable")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return (n for n in SAMPLING_NAMES if n in self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(tuple(self.items()))

    def __repr__(self) -> str:
        return f"Sampling({', '.join(f'{k}={v!r}' for k, v in self.items())})"
