"""Fixtures for the supervised-engine tests: real vLLM children of a real musad.

They need the sibling environment `.venv-vllm` (`make vllm-env`, which `make test` runs);
without it they skip, saying so. MUSA_OPS_VLLM_PYTHON names another interpreter.
One musad with two vLLM deployments (tensor parallel 1 and 2, deployed side by side) is
shared by the whole module: a vLLM start-up is the expensive part.
"""

from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
VLLM_PYTHON = os.environ.get("MUSA_OPS_VLLM_PYTHON", str(REPO / ".venv-vllm" / "bin" / "python"))


def vllm_python() -> str:
    if not os.path.exists(VLLM_PYTHON):
        pytest.skip(f"the vLLM tests need {VLLM_PYTHON} (`make vllm-env` creates .venv-vllm)")
    return VLLM_PYTHON


@pytest.fixture(scope="session")
def vllm_models(tmp_path_factory, demo_model_dir) -> pathlib.Path:
    """A repository with a tiny Llama vLLM's CPU attention accepts (head_dim 64), the same
    weights under a second name, the demo model, and a model vLLM refuses to start."""
    import json
    import shutil

    from tests.engine.checkpoints import write_hf_checkpoint

    repo = tmp_path_factory.mktemp("vllm-repo")
    write_hf_checkpoint(repo / "llama64", "llama", demo_model_dir, hidden_size=256, intermediate_size=512,
                        num_attention_heads=4, num_key_value_heads=2)
    shutil.copytree(repo / "llama64", repo / "llama64-tp2")
    shutil.copytree(demo_model_dir, repo / "demo16")
    # the same weights claiming a context of 2**20 tokens: more KV cache than the 1 GiB given
    shutil.copytree(repo / "llama64", repo / "long64")
    cfg = json.loads((repo / "long64" / "config.json").read_text())
    (repo / "long64" / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 1 << 20}))
    return repo


def vllm_overrides(python: str, state_dir: pathlib.Path, models: pathlib.Path) -> dict:
    """Config for a test musad: eager mode (start-ups in seconds, not minutes), 1 GiB of KV."""
    from musaops.daemon.config import ServerConfig

    quiet = {"server.http_listen": ""} if hasattr(ServerConfig, "http_listen") else {}
    return {
        **quiet,
        "server.listen": "127.0.0.1:0", "server.metrics_listen": "127.0.0.1:0", "server.grace_seconds": 5.0,
        "models.device": "cpu", "auth.required": False, "storage.state_dir": str(state_dir),
        "models.dir": str(models), "engines.vllm.python": python, "engines.vllm.enforce_eager": True,
        "engines.vllm.cpu_kv_cache_gib": 1.0, "engines.vllm.stop_timeout_s": 10.0,
    }
