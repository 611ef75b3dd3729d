"""Console tokens: in the OS keyring when it works, else in a 0600 file; never in SQLite."""

from __future__ import annotations

import keyring
import pytest
from keyring.backend import KeyringBackend

from musaops.app.core.nodes import NodeAddress
from musaops.app.services.keyring_store import TokenVault
from musaops.app.services.store import NodeProfile, Store


def test_file_vault_is_private_and_round_trips(tmp_path):
    v = TokenVault(tmp_path / "data", use_keyring=False)
    assert v.backend == "file" and v.get("a") is None
    v.set("a", "musa_secret-1")
    v.set("b", "musa_secret-2")
    assert (tmp_path / "data" / "tokens.json").stat().st_mode & 0o777 == 0o600
    assert TokenVault(tmp_path / "data", use_keyring=False).get("a") == "musa_secret-1"
    v.set("a", "")
    assert v.get("a") is None and v.get("b") == "musa_secret-2"
    (tmp_path / "data" / "tokens.json").chmod(0o644)
    assert v.get("b") == "musa_secret-2"
    assert (tmp_path / "data" / "tokens.json").stat().st_mode & 0o777 == 0o600


def test_store_keeps_tokens_out_of_sqlite_and_moves_old_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSA_CONSOLE_KEYRING", "0")
    db = tmp_path / "console.sqlite3"
    store = Store(db)
    assert store.vault.backend == "file"
    p = store.save_profile(NodeProfile(0, NodeAddress("10.0.0.7", 50051, "gpu-7", "musa_topsecret", None)))
    assert p.address.token == "musa_topsecret"
    assert store.list_profiles()[0].address.token == "musa_topsecret"
    store.close()
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("console.sqlite3*"))
    assert b"musa_topsecret" not in raw
    # a profile written by an older console (token in the column) is moved to the vault
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("UPDATE node_profiles SET token = 'musa_legacy'")
    con.commit()
    con.close()
    store = Store(db)
    assert store.list_profiles()[0].address.token == "musa_legacy"
    assert store.delete_profile(p.id)
    assert store.vault.get(f"profile-{p.id}") is None
    store.close()


class _MemoryKeyring(KeyringBackend):
    """An in-process keyring backend (the OS one is absent on build machines)."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.data.get((service, username))

    def set_password(self, service, username, password):
        self.data[(service, username)] = password

    def delete_password(self, service, username):
        self.data.pop((service, username), None)


def test_working_keyring_is_preferred(tmp_path, monkeypatch):
    monkeypatch.delenv("MUSA_CONSOLE_KEYRING", raising=False)
    previous = keyring.get_keyring()
    backend = _MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        v = TokenVault(tmp_path)
        assert v.backend == "keyring"
        v.set("profile-1", "musa_k")
        assert backend.data == {("musa-console", "profile-1"): "musa_k"}
        assert v.get("profile-1") == "musa_k" and not (tmp_path / "tokens.json").exists()
        v.delete("profile-1")
        assert v.get("profile-1") is None
    finally:
        keyring.set_keyring(previous)


def test_broken_keyring_falls_back_to_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MUSA_CONSOLE_KEYRING", raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        assert TokenVault(tmp_path).backend == "file"
        with pytest.raises(RuntimeError):
            TokenVault(tmp_path, use_keyring=True)
    finally:
        keyring.set_keyring(previous)
