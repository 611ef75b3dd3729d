"""Chat templates: compiled in a sandboxed jinja2 environment and rendered under a time and a
size bound, so a model's template cannot stall or jam the daemon.

A template is code from the model's folder. The sandbox (jinja2's immutable one) keeps it
from reaching Python; the bounds here keep it from taking the node's time or memory:

- time: while it renders, the rendering thread traces the template's own frames and stops
  the render at the first line after `timeout_s` (a nested loop, a loop over a long range);
- output: the render is a generator (`Template.generate`), counted chunk by chunk and
  stopped once it passes `max_chars` (what the deployment's context could hold anyway);
- single steps: `*`, `+`, `**` and `%` on strings, lists and numbers, and every call and
  filter given a number larger than `max_chars` (`range(10**6)`, `'x' * 10**9`,
  `center(10**9)`, `'%0999999999d'`) are refused before they allocate.

Every failure, a bound or an error of the template itself, is a `TemplateRenderError` with
one sentence; the engine turns it into an invalid request (INVALID_ARGUMENT).
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .api import EngineSpec

FILENAME = "<chat template>"
DEFAULT_TIMEOUT_S = EngineSpec.template_timeout_s   # one default: the engine's spec


class TemplateRenderError(Exception):
    """The template could not render these messages (a sentence)."""


class _Bound(Exception):
    """A render bound was hit (raised inside the template's frames)."""


_state = threading.local()   # the render in progress on this thread: max_chars


def _cap() -> int:
    return getattr(_state, "max_chars", None) or (1 << 20)


def _check_number(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _cap():
        raise _Bound(f"asked for {value:,} items or characters, more than the {_cap():,} "
                     "characters this deployment's context can hold")


def _check_args(args: tuple, kwargs: dict) -> None:
    for v in args:
        _check_number(v)
    for v in kwargs.values():
        _check_number(v)


_WIDTH = re.compile(r"\d+")


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:  # noqa: ANN001
        sized = (str, list, tuple)
        if operator == "*":
            if isinstance(left, sized) and isinstance(right, int):
                _check_number(len(left) * right)
            elif isinstance(right, sized) and isinstance(left, int):
                _check_number(len(right) * left)
        elif operator == "+" and isinstance(left, sized) and isinstance(right, sized):
            _check_number(len(left) + len(right))
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * math.log2(abs(left)) > 4096:
                raise _Bound(f"computes {left} ** {right}, a number too large for a prompt")
        elif operator == "%" and isinstance(left, str):
            for width in _WIDTH.findall(left):
                _check_number(int(width))
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_args(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _capped_filter(f):  # noqa: ANN001, ANN202
    skip = 2 if hasattr(f, "jinja_pass_arg") else 1   # (context/environment,) value

    def capped(*args: Any, **kwargs: Any) -> Any:
        _check_args(args[skip:], kwargs)
        return f(*args, **kwargs)

    if hasattr(f, "jinja_pass_arg"):
        capped.jinja_pass_arg = f.jinja_pass_arg  # type: ignore[attr-defined]
    return capped


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def compile_template(source: str):  # noqa: ANN201
    """A compiled template (raises jinja2's TemplateError when it does not compile)."""
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True)
    env.filters = {name: _capped_filter(f) for name, f in env.filters.items()}
    env.globals.pop("lipsum", None)   # lipsum(n) makes text of any size
    env.globals["raise_exception"] = _raise_exception
    code = env.compile(source, filename=FILENAME)
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def render(template, *, max_chars: int, timeout_s: float = DEFAULT_TIMEOUT_S, **variables: Any) -> str:  # noqa: ANN001
    """The template rendered with `variables`, or TemplateRenderError: see the module
    docstring for the bounds. Runs on the calling thread (a worker, never the event loop)."""
    deadline = time.monotonic() + timeout_s
    limit = f"ran for more than {timeout_s:g} s"

    def line(frame, event, arg):  # noqa: ANN001, ANN202
        if time.monotonic() > deadline:
            raise _Bound(limit)
        return line

    def call(frame, event, arg):  # noqa: ANN001, ANN202
        if frame.f_code.co_filename != FILENAME:
            return None
        return line(frame, event, arg)

    before = sys.gettrace()
    _state.max_chars = max_chars
    parts: list[str] = []
    total = 0
    sys.settrace(call)
    try:
        for chunk in template.generate(**variables):
            total += len(chunk)
            if total > max_chars:
                raise _Bound(f"produced more than {max_chars:,} characters, more than this deployment's "
                             "context can hold")
            if time.monotonic() > deadline:
                raise _Bound(limit)
            parts.append(chunk)
    except _Bound as exc:
        raise TemplateRenderError(f"the chat template {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a template error, jinja's sandbox refusals, OverflowError...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise TemplateRenderError(f"the chat template could not render these messages: {first}") from None
    finally:
        sys.settrace(before)
        _state.max_chars = None
    return "".join(parts)
