"""Model repository: the demo model, sharded checkpoints and broken folders."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from musaops.daemon.demo_model import DEMO_MODEL_NAME, SHAPE, write_demo_model
from musaops.daemon.repository import ModelRepository, safetensors_parameters


def _copy_demo(demo_model_dir, repo, name):
    dst = repo / name
    shutil.copytree(demo_model_dir, dst)
    return dst


def test_demo_model_is_listed_available_with_its_facts(demo_model_dir):
    entries = ModelRepository(demo_model_dir.parent).scan()
    assert [e.name for e in entries] == [DEMO_MODEL_NAME]
    e = entries[0]
    assert e.ok, e.error
    assert e.architecture == "LlamaForCausalLM"
    assert e.num_layers == SHAPE["num_hidden_layers"] and e.hidden_size == SHAPE["hidden_size"]
    assert e.max_position_embeddings == SHAPE["max_position_embeddings"]
    assert e.torch_dtype == "float32"
    # parameters: embeddings + lm_head + per layer (q, k, v, o, gate, up, down, 2 norms) + final norm
    h, i, v = SHAPE["hidden_size"], SHAPE["intermediate_size"], e.vocab_size
    kv = SHAPE["num_key_value_heads"] * (h // SHAPE["num_attention_heads"])
    per_layer = h * h * 2 + kv * h * 2 + 3 * h * i + 2 * h
    assert e.parameters == 2 * v * h + SHAPE["num_hidden_layers"] * per_layer + h
    assert e.size_bytes < 5 * 1024 * 1024
    est = {m.dtype: m for m in e.estimates}
    assert est["float32"].weights_bytes == 4 * e.parameters
    assert est["bfloat16"].weights_bytes == 2 * e.parameters
    assert est["float16"].kv_bytes_per_token == 2 * 2 * 2 * 16 * 2  # 2 * layers * kv_heads * head_dim * 2B
    assert est["float16"].total_bytes == est["float16"].weights_bytes + est["float16"].kv_bytes_per_token * 2048


def test_demo_model_is_deterministic(tmp_path, demo_model_dir):
    again = write_demo_model(tmp_path / "again")
    for f in demo_model_dir.iterdir():
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name


def test_truncated_safetensors_is_listed_as_error(tmp_path, demo_model_dir):
    good = _copy_demo(demo_model_dir, tmp_path, "good")
    cut = _copy_demo(demo_model_dir, tmp_path, "cut-weights")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) - 1000])
    short = _copy_demo(demo_model_dir, tmp_path, "cut-header")
    (short / "model.safetensors").write_bytes(data[:100])
    entries = {e.name: e for e in ModelRepository(tmp_path).scan()}
    assert entries["good"].ok
    assert "truncated" in entries["cut-weights"].error and "ends at byte" in entries["cut-weights"].error
    assert "truncated" in entries["cut-header"].error and "header claims" in entries["cut-header"].error
    assert good.exists()


@pytest.mark.parametrize("breakage, reason", [
    (lambda d: (d / "config.json").unlink(), "config.json is missing"),
    (lambda d: (d / "config.json").write_text("{not json"), "config.json is not valid JSON"),
    (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    (lambda d: (d / "model.safetensors").unlink(), "no *.safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00notjs"), "corrupt header"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x01"), "truncated"),
    (lambda d: _edit_config(d, hidden_size="big"), "'hidden_size' must be a positive integer"),
    (lambda d: _edit_config(d, num_hidden_layers=None), "lacks 'num_hidden_layers'"),
    (lambda d: (d / "tokenizer.json").write_text("{not json"), "tokenizer.json is not valid JSON"),
    (lambda d: _edit_config(d, architectures=["GemmaForCausalLM"]),
     "config.json: architecture GemmaForCausalLM is not supported by this engine (supported: "
     "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"),
    (lambda d: _edit_config(d, vocab_size=10**9, hidden_size=10**6),
     "config.json implies 2,000,001,"),
])
def test_broken_folders_are_errors_with_reasons(tmp_path, demo_model_dir, breakage, reason):
    d = _copy_demo(demo_model_dir, tmp_path, "broken")
    breakage(d)
    (entry,) = ModelRepository(tmp_path).scan()
    assert not entry.ok and reason in entry.error


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def test_sharded_checkpoint_counts_every_shard(tmp_path, demo_model_dir):
    from safetensors.numpy import load_file

    d = tmp_path / "sharded"
    d.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(demo_model_dir / f, d / f)
    tensors = load_file(str(demo_model_dir / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
    for shard, part in shards.items():
        save_file({n: tensors[n] for n in part}, str(d / shard))
    index = {"metadata": {}, "weight_map": {n: shard for shard, part in shards.items() for n in part}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    repo = ModelRepository(tmp_path)
    (entry,) = repo.scan()
    assert entry.ok and entry.parameters == sum(t.size for t in tensors.values())
    (d / "model-00002-of-00002.safetensors").unlink()
    (entry,) = repo.scan()  # the cache notices the change
    assert "model-00002-of-00002.safetensors" in entry.error and "missing" in entry.error


def test_missing_root_and_rescan_cache(tmp_path, demo_model_dir):
    repo = ModelRepository(tmp_path / "absent")
    assert repo.scan() == []
    repo = ModelRepository(tmp_path)
    assert repo.scan() == []
    _copy_demo(demo_model_dir, tmp_path, "m1")
    first = repo.scan()
    assert [e.name for e in first] == ["m1"]
    assert repo.scan()[0] is first[0]  # unchanged folder: served from the cache
    assert repo.get("m1") is first[0] and repo.get("nope") is None and repo.get("../m1") is None


def test_offsets_past_end_of_file(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    p = tmp_path / "w.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(Exception, match="ends at byte 16 of a 8-byte data section"):
        safetensors_parameters(p)


# -- edge cases an operator's disk produces ----------------------------------------------------


def test_symlinks_spaces_unicode_and_plain_files(tmp_path, demo_model_dir):
    import os

    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_demo(demo_model_dir, repo, "my model")
    _copy_demo(demo_model_dir, repo, "模型-ü")
    elsewhere = _copy_demo(demo_model_dir, tmp_path, "shared-storage")
    os.symlink(elsewhere, repo / "linked")
    os.symlink(tmp_path / "gone", repo / "dangling")
    os.symlink(repo / "loop", repo / "loop")
    (repo / "README.txt").write_text("not a model")
    (repo / "stray.safetensors").write_bytes(b"\0" * 16)
    entries = {e.name: e for e in ModelRepository(repo).scan()}
    assert set(entries) == {"my model", "模型-ü", "linked", "dangling", "loop"}
    for name in ("my model", "模型-ü", "linked"):
        assert entries[name].ok, entries[name].error
    assert entries["linked"].parameters == entries["my model"].parameters
    for name in ("dangling", "loop"):
        assert "symbolic link" in entries[name].error and "not a folder" in entries[name].error
    lookup = ModelRepository(repo)
    assert lookup.get("模型-ü").ok and lookup.get("linked").ok and "symbolic link" in lookup.get("dangling").error
    for name in ("README.txt", "stray.safetensors", "x" * 5000, "a\x00b", "..", "linked/..", "absent"):
        assert lookup.get(name) is None, name


def test_repository_problem_says_what_is_wrong_with_the_root(tmp_path):
    assert ModelRepository(tmp_path).problem() == ""
    assert ModelRepository(tmp_path / "absent").problem() == "the folder does not exist"
    (tmp_path / "file").write_text("x")
    repo = ModelRepository(tmp_path / "file")
    assert repo.problem() == "it is a file, not a folder" and repo.scan() == []


def test_extreme_config_and_header_values_are_errors(tmp_path, demo_model_dir):
    huge_int = _copy_demo(demo_model_dir, tmp_path, "huge-int")
    _edit_config(huge_int, num_hidden_layers=10**30)
    overflow = _copy_demo(demo_model_dir, tmp_path, "overflow")
    _edit_config(overflow, num_hidden_layers=2**31 - 1, num_key_value_heads=2**31 - 1, head_dim=2**31 - 1,
                 max_position_embeddings=2**31 - 1)
    surrogate = _copy_demo(demo_model_dir, tmp_path, "surrogate")
    text = (surrogate / "config.json").read_text().replace('"LlamaForCausalLM"', '"Llama\\ud800"')
    (surrogate / "config.json").write_text(text)
    big_json = _copy_demo(demo_model_dir, tmp_path, "big-json")
    with open(big_json / "config.json", "r+b") as fh:  # sparse: 100 MiB without writing it
        fh.truncate(100 * 1024 * 1024)
    giant_header = _copy_demo(demo_model_dir, tmp_path, "giant-header")
    (giant_header / "model.safetensors").write_bytes(struct.pack("<Q", 2**64 - 1) + b"{}")
    negative = _copy_demo(demo_model_dir, tmp_path, "negative-shape")
    header = json.dumps({"w": {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}}).encode()
    (negative / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    string_offsets = _copy_demo(demo_model_dir, tmp_path, "string-offsets")
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}).encode()
    (string_offsets / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)

    entries = {e.name: e for e in ModelRepository(tmp_path).scan()}
    assert "'num_hidden_layers' must be a positive integer" in entries["huge-int"].error
    assert "beyond 2^64 bytes" in entries["overflow"].error
    assert "architecture Llama\ufffd is not supported" in entries["surrogate"].error
    assert "over 64 MiB" in entries["big-json"].error
    assert "header claims" in entries["giant-header"].error
    assert "malformed header entry" in entries["negative-shape"].error
    assert "malformed header entry" in entries["string-offsets"].error


@pytest.mark.timeout(60)
async def test_list_models_survives_every_odd_folder(make_daemon, tmp_path, demo_model_dir):
    """One odd folder used to fail the whole ListModels (a uint32 overflow, a non-UTF-8 name)."""
    import os

    from musaops.v1 import common_pb2, node_pb2, node_pb2_grpc

    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_demo(demo_model_dir, repo, "good")
    _edit_config(_copy_demo(demo_model_dir, repo, "huge"), vocab_size=2**40)
    os.mkdir(os.fsencode(repo) + b"/latin1-\xe9")
    os.symlink(tmp_path / "gone", repo / "dangling")
    d = make_daemon(models_dir=repo)
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        models = {m.name: m for m in (await stub.ListModels(node_pb2.ListModelsRequest())).models}
        assert models["good"].state == common_pb2.MODEL_STATE_AVAILABLE
        assert models["huge"].state == common_pb2.MODEL_STATE_ERROR and "vocab_size" in models["huge"].reason
        assert models["latin1-\ufffd"].reason == "the folder name is not valid UTF-8; rename the folder"
        assert models["dangling"].state == common_pb2.MODEL_STATE_ERROR
        with pytest.raises(Exception) as err:
            async for _ in stub.Deploy(node_pb2.DeployRequest(model="latin1-\ufffd")):
                pass
        assert "not valid UTF-8" in err.value.details()


@pytest.mark.timeout(60)
async def test_absent_models_folder_daemon_starts_and_says_so(make_daemon, tmp_path, caplog):
    """An operator may mount or fill the folder later: the daemon starts, logs a warning,
    lists nothing, and a Deploy names the folder and the problem."""
    import grpc

    from musaops.v1 import node_pb2, node_pb2_grpc

    d = make_daemon(models_dir=tmp_path / "not-there")
    assert any("does not exist" in r.getMessage() for r in caplog.records)
    async with d.channel() as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        assert not (await stub.ListModels(node_pb2.ListModelsRequest())).models
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Deploy(node_pb2.DeployRequest(model="m")):
                pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "the folder does not exist" in err.value.details()
