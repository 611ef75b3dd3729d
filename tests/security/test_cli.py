"""`musad token | certs | audit` run in-process through the real argument parser."""

from __future__ import annotations

import sqlite3

import pytest

from musaops.daemon.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_token_lifecycle_and_audit_verify_export(tmp_path, capsys):
    db = ["--db", str(tmp_path / "m.db"), "--state-dir", str(tmp_path / "state")]
    rc, out, _ = _run(capsys, "token", "create", "--name", "ci", "--role", "auditor", "--expires", "30", *db)
    assert rc == 0 and out.strip().startswith("musa_")
    assert _run(capsys, "token", "create", "--name", "ci", "--role", "auditor", *db)[0] == 2
    rc, out, _ = _run(capsys, "token", "list", *db)
    assert rc == 0 and "ci" in out and "auditor" in out and "active" in out and "musa_" not in out
    assert _run(capsys, "token", "revoke", "ci", *db)[0] == 0
    assert "revoked" in _run(capsys, "token", "list", *db)[1]
    assert _run(capsys, "token", "revoke", "ci", *db)[0] == 1

    rc, out, _ = _run(capsys, "audit", "verify", *db)
    assert rc == 0 and out.startswith("OK: 4 records; head ")

    export = tmp_path / "out.json"
    rc, out, _ = _run(capsys, "audit", "export", "--format", "json", "--out", str(export), "--sign",
                      "--action", "token.revoke", "--since", "2000-01-01T00:00:00Z", *db)
    assert rc == 0 and "exported 2 records" in out and "signed" in out
    rc, key, _ = _run(capsys, "audit", "key", *db)
    rc, out, _ = _run(capsys, "audit", "verify-export", str(export), "--public-key", key.strip())
    assert rc == 0 and out.startswith("OK: 2 records (a filtered part of the chain), signed")
    data = bytearray(export.read_bytes())
    data[len(data) // 2] ^= 0x20
    export.write_bytes(bytes(data))
    rc, out, _ = _run(capsys, "audit", "verify-export", str(export))
    assert rc == 1 and out.startswith("FAILED")

    con = sqlite3.connect(tmp_path / "m.db")
    con.execute("DROP TRIGGER audit_log_no_delete")
    con.execute("DELETE FROM audit_log WHERE seq = 2")
    con.commit()
    con.close()
    rc, out, _ = _run(capsys, "audit", "verify", *db)
    assert rc == 1 and out.startswith("BROKEN at record 2")


def test_certs_init_and_bad_usage(tmp_path, capsys):
    rc, out, _ = _run(capsys, "certs", "init", str(tmp_path / "pki"), "--host", "localhost")
    assert rc == 0 and "server.pem" in out
    assert _run(capsys, "certs", "init", str(tmp_path / "pki"), "--host", "localhost")[0] == 2
    with pytest.raises(SystemExit) as exc:
        main(["audit", "export", "--format", "xml", "--out", "x"])
    assert exc.value.code == 2
    rc, _, err = _run(capsys, "audit", "export", "--format", "csv", "--out", str(tmp_path / "x.csv"),
                      "--since", "2026-02-01", "--until", "2026-01-01", "--db", str(tmp_path / "d.db"))
    assert rc == 2 and "--until" in err
