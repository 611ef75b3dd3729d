"""Tampering with the stored chain is caught by verify(), at the first broken record."""

from __future__ import annotations

import sqlite3

import pytest

from musaops.daemon.trust.audit import AuditLog, AuditError
from musaops.daemon.trust.caller import Caller

N = 10


def _filled(tmp_path) -> str:
    db = str(tmp_path / "audit.db")
    with AuditLog.open(db, node="n1") as log:
        for i in range(N):
            log.record_sync("node.Deploy", f"model-{i}", {"i": i}, "ok",
                            caller=Caller(f"user{i % 3}", "operator", "ipv4:10.0.0.1:1"))
        assert log.verify().ok
    return db


def _tamper(db: str, *sql: str) -> None:
    """What an intruder with the file does: drop the append-only guards, then edit."""
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER audit_log_no_update")
    con.execute("DROP TRIGGER audit_log_no_delete")
    for s in sql:
        con.execute(s)
    con.commit()
    con.close()


def _verify(db: str):
    with AuditLog.open(db, node="n1") as log:
        return log.verify()


def test_untouched_chain_verifies(tmp_path):
    r = _verify(_filled(tmp_path))
    assert (r.ok, r.records, r.first_broken_seq) == (True, N, 0)
    assert len(r.head_hash) == 64


def test_database_refuses_update_and_delete(tmp_path):
    con = sqlite3.connect(_filled(tmp_path))
    for sql in ("UPDATE audit_log SET actor='x' WHERE seq=1", "DELETE FROM audit_log WHERE seq=1"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    con.close()


def test_edited_row_is_caught(tmp_path):
    db = _filled(tmp_path)
    _tamper(db, "UPDATE audit_log SET actor='mallory' WHERE seq=4")
    r = _verify(db)
    assert (r.ok, r.first_broken_seq) == (False, 4) and "altered" in r.reason


def test_edited_row_with_recomputed_hash_is_caught_at_the_next_link(tmp_path):
    from musaops.daemon.trust.audit import entry_hash

    db = _filled(tmp_path)
    with AuditLog.open(db, node="n1") as log:
        row = log.query(after_seq=3, limit=1)[0].as_dict()
    row["target"] = "forged"
    _tamper(db, f"UPDATE audit_log SET target='forged', hash='{entry_hash(row)}' WHERE seq=4")
    r = _verify(db)
    assert (r.ok, r.first_broken_seq) == (False, 5) and "link" in r.reason


def test_deleted_row_is_caught(tmp_path):
    db = _filled(tmp_path)
    _tamper(db, "DELETE FROM audit_log WHERE seq=6")
    r = _verify(db)
    assert (r.ok, r.first_broken_seq) == (False, 6) and "missing" in r.reason


def test_swapped_rows_are_caught(tmp_path):
    db = _filled(tmp_path)
    cols = "time_us, node, actor, role, client, action, target, params_json, outcome, error, prev_hash, hash"
    _tamper(db,
            f"CREATE TEMP TABLE t AS SELECT seq, {cols} FROM audit_log WHERE seq IN (3, 7)",
            "UPDATE audit_log SET " + ", ".join(
                f"{c} = (SELECT {c} FROM t WHERE t.seq = 10 - audit_log.seq)" for c in cols.split(", "))
            + " WHERE seq IN (3, 7)")
    r = _verify(db)
    assert (r.ok, r.first_broken_seq) == (False, 3)


def test_truncated_tail_is_caught(tmp_path):
    db = _filled(tmp_path)
    _tamper(db, "DELETE FROM audit_log WHERE seq > 7")
    r = _verify(db)
    assert (r.ok, r.records, r.first_broken_seq) == (False, 7, 8) and "tail" in r.reason


def test_record_after_close_is_refused(tmp_path):
    log = AuditLog.open(str(tmp_path / "a.db"), node="n")
    log.close()
    with pytest.raises(AuditError):
        log.record_sync("x")


def test_deleted_head_pointer_is_caught_and_appends_refused(tmp_path):
    db = _filled(tmp_path)
    _tamper(db, "DELETE FROM audit_head")
    r = _verify(db)
    assert not r.ok and "head pointer" in r.reason
    with AuditLog.open(db, node="n1") as log:
        with pytest.raises(AuditError, match="head row is missing"):
            log.record_sync("node.Deploy", "x")
