"""Alembic migrations for the daemon database (audit log, head pointer, auth tokens).

`upgrade(engine)` runs them programmatically when the daemon or a CLI command opens the
database, on SQLite and PostgreSQL alike; no alembic.ini is needed.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

VERSION_TABLE = "musad_alembic_version"
HEAD = "0002"   # the newest revision in versions/ (a test keeps this in step)
_HERE = Path(__file__).resolve().parent


def current_revision(engine: Engine) -> str | None:
    from sqlalchemy import inspect

    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Brings the schema to `revision`; safe when several processes open the DB at once.
    A database already at HEAD is left alone without loading Alembic (fast CLI starts)."""
    if revision == "head" and current_revision(engine) == HEAD:
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    with engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            # Serialise concurrent openers; released at commit.
            conn.execute(text("SELECT pg_advisory_xact_lock(7201505)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
