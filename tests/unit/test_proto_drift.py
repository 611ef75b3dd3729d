"""The committed protobuf modules are exactly what `make proto` generates from the .proto files."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "protos" / "musaops" / "v1"


def _generate():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


@pytest.mark.timeout(120)
def test_generated_files_match_the_protos(tmp_path):
    files = _generate()(tmp_path)
    fresh = {p.name: p.read_bytes() for p in files}
    committed = {p.name: p.read_bytes() for p in COMMITTED.glob("*_pb2*.py*")}
    assert set(fresh) == set(committed), "run `make proto` and commit the result"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} differ from a fresh generation: run `make proto` and commit"
    protos = {p.stem for p in COMMITTED.glob("*.proto")}
    assert {n.split("_pb2")[0] for n in fresh} == protos
