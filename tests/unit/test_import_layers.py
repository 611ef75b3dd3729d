"""Every module of the daemon and of the console's Qt package has a place in the import
contracts (pyproject's [tool.importlinter]): a new module that no layer names would escape
the layer and cycle checks that `make lint` runs, so it fails here, saying where to add it."""

from __future__ import annotations

import pathlib
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _contracts() -> list[dict]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)["tool"]["importlinter"]["contracts"]


def _children(folder: pathlib.Path) -> set[str]:
    """The modules and packages directly inside `folder` (generated protobuf code aside)."""
    names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__" and "_pb2" not in p.stem}
    names |= {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    return names


def _layered(container: str) -> set[str]:
    """The names that the layers contracts over `container` place in a row."""
    names: set[str] = set()
    for contract in _contracts():
        if contract["type"] == "layers" and container in contract.get("containers", []):
            for row in contract["layers"]:
                names |= {n.strip() for n in row.replace(":", "|").split("|")}
    return names


def _sources_of(name: str) -> set[str]:
    contract = next(c for c in _contracts() if c["name"] == name)
    return set(contract["source_modules"])


@pytest.mark.parametrize("container, folder, elsewhere", [
    ("musaops.daemon", "daemon", "The shell client reaches a node only over the wire"),
    ("musaops.app.qt", "app/qt", None),
])
def test_every_module_has_a_layer(container, folder, elsewhere):
    placed = _layered(container)
    if elsewhere:
        placed |= {m.removeprefix(container + ".") for m in _sources_of(elsewhere)}
    missing = sorted(_children(ROOT / folder) - placed)
    assert not missing, (f"{', '.join(missing)} in {folder}/ has no row in the layers contract over "
                         f"{container} in pyproject.toml; add it to the row of what it imports or is imported by")
    stale = sorted(n for n in placed if n not in _children(ROOT / folder))
    assert not stale, f"the contracts over {container} name {', '.join(stale)}, which {folder}/ no longer holds"


def test_the_daemon_and_the_console_are_checked_for_cycles():
    ancestors = {a for c in _contracts() if c["type"] == "acyclic_siblings" for a in c["ancestors"]}
    assert {"musaops.daemon", "musaops.app"} <= ancestors
