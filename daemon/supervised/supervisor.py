"""The deployment manager's door to supervised engines: which engine a Deploy gets, its
checked options, the loader that starts a child, and the leftovers of an earlier musad.

deployments.py calls `choose(...)` before the first Deploy event (a refusal is a
RequestError) and `loader(...)` to get the blocking load function for the worker thread.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any, Callable

from ..config import VllmConfig
from ..errors import RequestError, Status
from . import options as opts
from .installed import installed, interpreter
from .process import reap_leftovers
from .vllm_engine import engines_folder, load_vllm_engine

log = logging.getLogger(__name__)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Supervisor:
    def __init__(self, cfg: VllmConfig, state_dir: str | os.PathLike) -> None:
        self.cfg = cfg
        self.state_dir = str(state_dir)
        self.python = interpreter(cfg.python)

    def reap(self) -> list[int]:
        """Stops children an earlier musad left running (call once at start-up)."""
        return reap_leftovers(engines_folder(self.state_dir))

    def engines(self) -> dict[str, str]:
        """{"builtin": "", "vllm": version} for the engines this node can run (blocking once)."""
        found = installed(self.python)
        return {opts.BUILTIN: "", **({opts.VLLM: found["vllm"]} if found.get("vllm") else {})}

    def plugin_versions(self) -> dict[str, str]:
        return {k: v for k, v in installed(self.python).items() if k != "vllm" and v}

    def choose(self, req: Any, backend: str, indices: tuple[int, ...]) -> tuple[str, opts.VllmOptions | None]:
        """(engine name, its options) for a DeployRequest; RequestError INVALID_ARGUMENT when
        the engine is unknown, not installed, or an option is out of range. May block (the
        first call runs the interpreter): call it off the event loop."""
        try:
            kind = opts.engine_name(req.engine)
            if kind == opts.BUILTIN:
                has_options = bool(req.max_num_batched_tokens or req.quantization or req.gpu_memory_utilization
                                   or req.enable_prefix_caching is not None)
                opts.check_builtin(len(indices), req.tensor_parallel_size, has_options, req.max_restarts)
                return kind, None
            options = opts.check_vllm(backend, indices, req.tensor_parallel_size, _cpu_count(),
                                      req.max_num_batched_tokens, req.enable_prefix_caching, req.quantization,
                                      req.gpu_memory_utilization, req.max_restarts, self.cfg.restarts)
        except opts.OptionError as exc:
            raise RequestError(Status.INVALID_ARGUMENT, str(exc)) from None
        if not installed(self.python).get("vllm"):
            raise RequestError(Status.INVALID_ARGUMENT,
                               f"Engine \"vllm\" is not installed on this node (no vllm package for "
                               f"{self.python}, engines.vllm.python); deploy with the built-in engine or "
                               "install vLLM there.")
        return kind, options

    def loader(self, name: str, options: opts.VllmOptions, on_crash: Callable[[str], None]) -> Callable[..., Any]:
        """The blocking load function for deployments' worker thread (the built-in loader's
        signature: model_dir, spec, target, progress=, observer=, cancel=)."""
        def load(model_dir: str | pathlib.Path, spec, target, progress=None, observer=None, cancel=None):
            return load_vllm_engine(name, str(model_dir), spec, target, options, self.cfg, self.state_dir,
                                    progress=progress, observer=observer, cancel=cancel, on_crash=on_crash)
        return load
