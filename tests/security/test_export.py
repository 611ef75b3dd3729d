"""Export round trip: export, parse, same records; verify-export passes; any changed byte fails."""

from __future__ import annotations

import pytest

from musaops.daemon.trust.audit import AuditFilter, AuditLog
from musaops.daemon.trust.audit_export import (ExportError, export_log, load_or_create_signing_key,
                                               public_key_bytes, read_export, verify_export)
from musaops.daemon.trust.caller import Caller

FORMATS = ("csv", "jsonl", "json")


@pytest.fixture
def filled_log(tmp_path):
    with AuditLog.open(str(tmp_path / "audit.db"), node="node-a") as log:
        for i in range(25):
            log.record_sync("node.Deploy" if i % 2 else "token.create", f"m{i}",
                            {"i": i, "text": "ünïcode, \"quotes\"\nand a newline"},
                            "failed" if i % 5 == 0 else "ok",
                            error="boom,\n#not a trailer" if i % 5 == 0 else "",
                            caller=Caller(f"user{i % 3}", "admin", "ipv4:10.0.0.2:5"))
        yield log


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_same_records_and_signed_verify(filled_log, tmp_path, fmt):
    key = load_or_create_signing_key(tmp_path / "keys" / "node.pem")
    out = tmp_path / f"export.{fmt}"
    summary = export_log(filled_log, out, fmt, sign_key=key)
    assert (summary.records, summary.first_seq, summary.last_seq, summary.head_seq) == (25, 1, 25, 25)
    assert [r for r in read_export(out)] == [e.as_dict() for e in filled_log.iter_records()]
    check = verify_export(out, public_key=public_key_bytes(key))
    assert check.ok and check.signed and check.complete_chain, check.reason
    assert (check.records, check.head_hash) == (25, filled_log.head()[1])
    assert (tmp_path / "keys" / "node.pem").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_single_changed_byte_fails(filled_log, tmp_path, fmt):
    key = load_or_create_signing_key(tmp_path / "node.pem")
    out = tmp_path / f"export.{fmt}"
    export_log(filled_log, out, fmt, sign_key=key)
    data = out.read_bytes()
    # every 13th byte position (and the first and last): flip one bit, verification fails
    positions = sorted(set(range(0, len(data), 13)) | {0, len(data) - 2})
    for pos in positions:
        changed = bytearray(data)
        changed[pos] ^= 0x01
        out.write_bytes(bytes(changed))
        assert not verify_export(out).ok, f"byte {pos} of {len(data)} changed, still verified"
    out.write_bytes(data)
    assert verify_export(out).ok


@pytest.mark.parametrize("fmt", FORMATS)
def test_filtered_unsigned_export_verifies_records_but_pinned_key_needs_signature(filled_log, tmp_path, fmt):
    out = tmp_path / f"f.{fmt}"
    s = export_log(filled_log, out, fmt, AuditFilter(actor="user1", outcome="ok"))
    want = [e.as_dict() for e in filled_log.iter_records() if e.actor == "user1" and e.outcome == "ok"]
    assert list(read_export(out)) == want and s.records == len(want) > 0
    check = verify_export(out)
    assert check.ok and not check.signed and not check.complete_chain
    other = load_or_create_signing_key(tmp_path / "other.pem")
    assert not verify_export(out, public_key=public_key_bytes(other)).ok


def test_other_key_and_truncation_fail(filled_log, tmp_path):
    key = load_or_create_signing_key(tmp_path / "a.pem")
    other = load_or_create_signing_key(tmp_path / "b.pem")
    out = tmp_path / "e.jsonl"
    export_log(filled_log, out, "jsonl", sign_key=key)
    r = verify_export(out, public_key=public_key_bytes(other))
    assert not r.ok and "different key" in r.reason
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:-3] + lines[-1:]))      # drop two records, keep trailer
    assert not verify_export(out).ok
    out.write_bytes(b"".join(lines[:-1]))                   # drop the trailer
    assert not verify_export(out).ok


def test_bad_format_is_refused(filled_log, tmp_path):
    with pytest.raises(ExportError):
        export_log(filled_log, tmp_path / "x", "xml")
