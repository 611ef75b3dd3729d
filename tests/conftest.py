"""Shared fixtures for every test folder.

- `demo_model_dir`: the demo checkpoint, written once per session (a model folder whose
  parent is a models repository holding only it).
- `daemon`: a real musad server on port 0 with a temp state folder and SQLite.
- `postgres_url`: the test PostgreSQL URL, or a skip (a failure under MUSA_OPS_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pathlib  # noqa: E402

import pytest  # noqa: E402

from musaops.daemon.demo_model import DEMO_MODEL_NAME, write_demo_model  # noqa: E402


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> pathlib.Path:
    """`<tmp>/models/tiny-llama`, the model `musad demo-model` writes."""
    return write_demo_model(tmp_path_factory.mktemp("repo") / "models" / DEMO_MODEL_NAME)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("MUSA_OPS_TEST_POSTGRES_URL", "")
    if not url:
        if os.environ.get("MUSA_OPS_REQUIRE_POSTGRES") == "1":
            pytest.fail("MUSA_OPS_REQUIRE_POSTGRES=1 but MUSA_OPS_TEST_POSTGRES_URL is unset")
        pytest.skip("PostgreSQL tests need MUSA_OPS_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    return url
