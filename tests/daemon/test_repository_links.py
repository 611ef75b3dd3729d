"""Symbolic links in the model repository: a link out of the repository is followed only to
a model (a folder with config.json, or a .gguf file), and size walks never enter links."""

from __future__ import annotations

import os
import shutil

from musaops.daemon.repository import ModelRepository


def test_links_to_root_and_etc_are_errors_without_a_walk_or_a_size(tmp_path, demo_model_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(demo_model_dir, repo / "real")
    os.symlink("/", repo / "root")
    os.symlink("/etc", repo / "etc")
    entries = {e.name: e for e in ModelRepository(repo).scan()}
    assert entries["real"].ok, entries["real"].error
    for name, target in (("root", "/"), ("etc", "/etc")):
        e = entries[name]
        assert not e.ok and e.size_bytes == 0, e
        assert "leads out of the repository" in e.error and target in e.error
    assert ModelRepository(repo).get("etc").size_bytes == 0


def test_a_link_to_a_model_folder_elsewhere_is_followed(tmp_path, demo_model_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    os.symlink(demo_model_dir, repo / "shared")
    os.symlink(repo / "shared", repo / "inside")   # within the repository: followed
    entries = {e.name: e for e in ModelRepository(repo).scan()}
    assert entries["shared"].ok and entries["inside"].ok, entries
    assert entries["shared"].size_bytes == entries["inside"].size_bytes > 0


def test_the_size_walk_does_not_enter_links_inside_a_model(tmp_path, demo_model_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    model = shutil.copytree(demo_model_dir, repo / "m")
    before = ModelRepository(repo).scan()[0].size_bytes
    os.symlink("/", model / "everything")
    (model / "sub").mkdir()
    os.symlink("/etc", model / "sub" / "etc")
    after = ModelRepository(repo).scan()[0]
    assert after.ok, after.error
    assert after.size_bytes == before
