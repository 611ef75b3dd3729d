"""pyproject's explicit package list matches the folders that hold an __init__.py."""

from __future__ import annotations

import pathlib
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_package_list_matches_folders():
    setup = _pyproject()["tool"]["setuptools"]
    mapping = setup["package-dir"]
    found = set()
    for name, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if any(part.startswith((".", "__")) for part in rel.parts):
                continue
            found.add(".".join((name, *rel.parts)))
    listed = set(setup["packages"])
    assert listed == found, (f"missing from pyproject packages: {sorted(found - listed)}; "
                             f"listed without an __init__.py: {sorted(listed - found)}")


def test_console_scripts_point_at_real_functions():
    import importlib

    for name, target in _pyproject()["project"]["scripts"].items():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), name
