"""`musad token create` limit flags and `musad token limits NAME` through the real parser."""

from __future__ import annotations

from musaops.daemon.cli import main
from musaops.daemon.limits import KeyLimits
from musaops.daemon.trust.audit import AuditLog
from musaops.daemon.trust.tokens import TokenStore


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _limits(db_path, name: str) -> KeyLimits:
    with AuditLog.open(str(db_path), node="t", must_exist=True) as log:
        return next(t.limits for t in TokenStore(log.engine).list() if t.name == name)


def test_create_with_limits_then_change_some(tmp_path, capsys):
    dbp = tmp_path / "m.db"
    db = ["--db", str(dbp), "--state-dir", str(tmp_path / "state")]
    rc, out, _ = _run(capsys, "token", "create", "--name", "team-a", "--role", "client",
                      "--models", "demo, other", "--rpm", "60", "--tpm", "1000", "--concurrent", "2",
                      "--daily-tokens", "50000", *db)
    assert rc == 0 and out.startswith("musa_")
    assert _limits(dbp, "team-a") == KeyLimits(models=("demo", "other"), rpm=60, tpm=1000,
                                               concurrent=2, daily_tokens=50000)
    rc, out, _ = _run(capsys, "token", "list", *db)
    assert "models=demo,other rpm=60 tpm=1000 concurrent=2 daily_tokens=50000" in out

    # only the flags given change; '' lifts the model list, 0 lifts a limit
    rc, out, _ = _run(capsys, "token", "limits", "team-a", "--rpm", "5", "--models", "", "--tpm", "0", *db)
    assert rc == 0 and "rpm=5" in out
    assert _limits(dbp, "team-a") == KeyLimits(rpm=5, concurrent=2, daily_tokens=50000)

    rc, out, _ = _run(capsys, "audit", "export", "--format", "jsonl", "--action", "token.limits",
                      "--out", str(tmp_path / "a.jsonl"), *db)
    assert rc == 0 and "exported 1 records" in out


def test_bad_limits_are_one_sentence(tmp_path, capsys):
    db = ["--db", str(tmp_path / "m.db"), "--state-dir", str(tmp_path / "state")]
    rc, out, err = _run(capsys, "token", "create", "--name", "k", "--role", "client", "--rpm", "-1", *db)
    assert rc == 2 and out == "" and "rpm must be a whole number" in err and "Traceback" not in err
    assert _run(capsys, "token", "create", "--name", "k", "--role", "client", *db)[0] == 0
    rc, _, err = _run(capsys, "token", "limits", "nobody", "--rpm", "3", *db)
    assert rc == 1 and "no token named 'nobody'" in err
    rc, _, err = _run(capsys, "token", "limits", "k", "--concurrent", "-4", *db)
    assert rc == 1 and "concurrent must be a whole number" in err
    assert _run(capsys, "token", "revoke", "k", *db)[0] == 0
    rc, _, err = _run(capsys, "token", "limits", "k", "--rpm", "3", *db)
    assert rc == 1 and "no active token named 'k'" in err
