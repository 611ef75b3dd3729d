"""Fixtures for the engine tests: tiny HF checkpoints (Llama, Qwen2) and loaded engines."""

from __future__ import annotations

import pathlib

import pytest

from .checkpoints import write_hf_checkpoint


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, demo_model_dir) -> pathlib.Path:
    return write_hf_checkpoint(tmp_path_factory.mktemp("llama"), "llama", demo_model_dir, seed=1)


@pytest.fixture(scope="session")
def qwen2_dir(tmp_path_factory, demo_model_dir) -> pathlib.Path:
    return write_hf_checkpoint(tmp_path_factory.mktemp("qwen2"), "qwen2", demo_model_dir, seed=2, tie=True)
