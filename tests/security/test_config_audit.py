"""Configuration changes are audited at start: the first config, then only real changes."""

from __future__ import annotations

import json

from musaops.daemon.trust.audit import AuditFilter, AuditLog, record_config_if_changed
from musaops.daemon.config import load_config


def test_config_change_recorded_once_per_change_without_db_password(tmp_path):
    base = {"storage.state_dir": str(tmp_path)}
    with AuditLog.open(str(tmp_path / "a.db"), node="n1") as log:
        first = record_config_if_changed(log, load_config(None, base))
        assert first is not None and first.action == "config.change"
        assert record_config_if_changed(log, load_config(None, base)) is None
        changed = record_config_if_changed(log, load_config(None, {**base, "engine.max_queue": 9,
                                                                   "audit.store_prompts": True}))
        assert json.loads(changed.params_json)["changed"] == ["audit.store_prompts", "engine.max_queue"]
        pg = load_config(None, {**base, "storage.db_url": "postgresql+psycopg://u:hunter2@db/x"})
        e = record_config_if_changed(log, pg)
        assert "hunter2" not in e.params_json and "storage.db_url" in json.loads(e.params_json)["changed"]
        assert len(log.query(AuditFilter(action="config.change"))) == 3
        assert log.verify().ok
