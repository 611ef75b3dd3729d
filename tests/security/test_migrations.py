"""The packaged Alembic migrations: HEAD constant in step, idempotent opens, schema present."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from musaops.daemon.trust import migrations
from musaops.daemon.trust.audit import create_db_engine, open_database


def test_head_constant_matches_the_revision_scripts():
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations._HERE))
    assert ScriptDirectory.from_config(cfg).get_current_head() == migrations.HEAD


def test_open_creates_schema_once_and_reopens(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = open_database(url)
    assert migrations.current_revision(engine) == migrations.HEAD
    names = set(sa.inspect(engine).get_table_names())
    assert {"audit_log", "audit_head", "auth_tokens", migrations.VERSION_TABLE} <= names
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2   # FULL
    engine.dispose()
    again = open_database(url)
    assert migrations.current_revision(again) == migrations.HEAD
    again.dispose()
    fresh = create_db_engine(str(tmp_path / "plain-path.db"))
    migrations.upgrade(fresh)
    assert (tmp_path / "plain-path.db").exists()
    fresh.dispose()
