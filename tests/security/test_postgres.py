"""The audit store and token store on the real PostgreSQL (a fresh schema per test, dropped after)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from musaops.daemon.trust.audit import AuditLog, AuditFilter
from musaops.daemon.trust.audit_export import export_log, read_export, verify_export
from musaops.daemon.trust.caller import Caller
from musaops.daemon.trust.tokens import TokenStore


@pytest.fixture
def pg_schema_url(postgres_url):
    schema = f"musaops_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.mark.timeout(120)
async def test_postgres_chain_two_writers_tamper_and_export(pg_schema_url, tmp_path):
    a = AuditLog.open(pg_schema_url, node="node-a")
    b = AuditLog.open(pg_schema_url, node="node-b")   # a second daemon sharing the database
    try:
        async def burst(log: AuditLog, who: str) -> None:
            await asyncio.gather(*(log.record("node.Deploy", f"m{i}", {"i": i}, "ok",
                                              caller=Caller(who, "operator", "ipv4:10.1.1.1:1"))
                                   for i in range(200)))
        await asyncio.gather(burst(a, "alice"), burst(b, "bob"))
        r = a.verify()
        assert (r.ok, r.records) == (True, 400), r.reason
        assert len(a.query(AuditFilter(node="node-b"), limit=1000)) == 200

        tokens = TokenStore(a.engine, audit=a)
        t = tokens.create("pg-viewer", "viewer")
        assert tokens.authenticate(t).role == "viewer"

        out = tmp_path / "pg.jsonl"
        export_log(a, out, "jsonl")
        assert verify_export(out).complete_chain
        assert len(list(read_export(out))) == 401

        with a.engine.begin() as conn:
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                conn.execute(sa.text("UPDATE audit_log SET actor = 'x' WHERE seq = 5"))
        with a.engine.begin() as conn:     # an intruder with DDL rights
            conn.execute(sa.text("DROP TRIGGER audit_log_append_only ON audit_log"))
            conn.execute(sa.text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 17"))
        r = b.verify()
        assert (r.ok, r.first_broken_seq) == (False, 17)
    finally:
        a.close()
        b.close()
