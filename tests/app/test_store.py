"""The console's SQLite store and its worker thread."""

from __future__ import annotations

import threading

import pytest

from musaops.app.core import NodeAddress, TlsFiles
from musaops.app.services.store import NodeProfile, Store, StoreWorker


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "console.sqlite3")
    yield s
    s.close()


def test_profiles_round_trip_with_tls_and_token(store) -> None:
    a = NodeAddress("gpu-7.example", 50051, name="rack 3", token="s3cret",
                    tls=TlsFiles("/etc/ca.pem", "/etc/c.pem", "/etc/c.key"))
    saved = store.save_profile(NodeProfile(0, a))
    assert saved.id > 0 and saved.address == a
    plain = store.save_profile(NodeProfile(0, NodeAddress("10.0.0.2", 7000)))
    assert [p.address for p in store.list_profiles()] == [a, plain.address]
    edited = store.save_profile(NodeProfile(saved.id, NodeAddress("gpu-8.example", 50052)))
    assert edited.id == saved.id and store.list_profiles()[0].address.tls is None
    assert store.delete_profile(saved.id) and not store.delete_profile(saved.id)
    assert [p.id for p in store.list_profiles()] == [plain.id]


def test_invalid_profile_is_refused_with_a_sentence(store) -> None:
    with pytest.raises(ValueError, match="port"):
        store.save_profile(NodeProfile(0, NodeAddress("h", 0)))
    assert store.list_profiles() == []


def test_settings_presets_and_log_persist_across_reopen(tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    s = Store(path)
    s.set_setting("theme", "dark")
    s.set_setting("alert_thresholds", {"temperature_celsius": 80.0})
    s.save_preset("playground", "short", {"temperature": 0.2, "max_tokens": 16})
    s.save_preset("playground", "short", {"temperature": 0.3})
    s.log("deploy", node="gpu-1", detail="tiny-llama", outcome="failed")
    s.close()
    s = Store(path)
    assert s.get_setting("theme") == "dark" and s.get_setting("missing", 5) == 5
    assert s.settings()["alert_thresholds"] == {"temperature_celsius": 80.0}
    [p] = s.list_presets("playground")
    assert p.name == "short" and p.value == {"temperature": 0.3}
    assert s.delete_preset("playground", "short") and s.list_presets("playground") == []
    [entry] = s.recent_log()
    assert (entry.action, entry.node, entry.outcome) == ("deploy", "gpu-1", "failed")
    settings, profiles = s.startup()
    assert settings["theme"] == "dark" and profiles == []
    s.close()


def test_worker_runs_off_the_calling_thread_and_returns_errors_as_values(store) -> None:
    worker = StoreWorker(store)
    results = []
    done = threading.Event()

    def record(result, error):
        results.append((threading.current_thread().name, result, error))
        if len(results) == 2:
            done.set()

    worker.submit("save_profile", NodeProfile(0, NodeAddress("h", 1)), done=record)
    worker.submit("save_preset", "playground", "  ", {}, done=record)
    assert done.wait(10)
    worker.close()
    (t1, saved, e1), (t2, none, e2) = results
    assert t1.startswith("console-store") and t1 != threading.current_thread().name
    assert saved.id > 0 and e1 == ""
    assert none is None and "needs a name" in e2
    assert worker.submit("list_profiles") is None  # closed: refused, not raised
    assert not [t for t in threading.enumerate() if t.name.startswith("console-store")]
