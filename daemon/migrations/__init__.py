"""Alembic migrations for the daemon database (audit log, head pointer, auth tokens).

`upgrade(engine)` runs them programmatically when the daemon or a CLI command opens the
database, on SQLite and PostgreSQL alike; no alembic.ini is needed.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

VERSION_TABLE = "musad_alembic_version"
_HERE = Path(__file__).resolve().parent


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Brings the schema to `revision`; safe when several processes open the DB at once."""
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
