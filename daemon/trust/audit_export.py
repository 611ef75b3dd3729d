"""Audit export (CSV, JSONL, JSON) that streams in constant memory, and its verification.

Every export has the same three parts, each starting on its own line:
  header   first line: node, filter, the chain head (seq, hash) at export time, field names
  records  one per line (CSV rows may span lines when a field holds a newline)
  trailer  last line: record count, seq and time range, SHA-256 of every byte before the
           trailer, and optionally an Ed25519 signature over the trailer by the node's key
CSV carries header and trailer as `#musaops-audit-...` comment lines; JSON is laid out one
record per line so it can be checked line by line. `verify_export()` recomputes the
digest, the signature and every record's hash, and the links between consecutive records.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

from .audit import FIELDS, GENESIS_HASH, AuditFilter, AuditLog, audit_log, entry_hash

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


FORMATS = ("csv", "jsonl", "json")
MAGIC = "musaops-audit-export/1"
CSV_HEADER_TAG = "#musaops-audit-header "
CSV_TRAILER_TAG = "#musaops-audit-trailer "
COLUMNS = ("seq", "time_utc") + FIELDS[1:]    # time_utc is derived, for people reading it
INT_FIELDS = ("seq", "time_us")
TRAILER_KEYS = frozenset({"magic", "records", "first_seq", "last_seq", "first_time_us",
                          "last_time_us", "body_sha256"})


class ExportError(ValueError):
    """The export cannot be written or does not verify; the message says why."""


@dataclass(frozen=True)
class ExportSummary:
    path: str
    format: str
    records: int
    first_seq: int
    last_seq: int
    head_seq: int
    head_hash: str
    signed: bool


@dataclass(frozen=True)
class ExportCheck:
    ok: bool
    records: int
    signed: bool
    reason: str = ""
    head_seq: int = 0
    head_hash: str = ""
    public_key_sha256: str = ""
    complete_chain: bool = False    # the export holds records 1..head with no gaps


# -- signing key -----------------------------------------------------------------------------

def load_or_create_signing_key(path: str | os.PathLike[str]) -> "Ed25519PrivateKey":
    """The node's Ed25519 key (PEM, mode 0600), created on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    if p.exists():
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ExportError(f"{p} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def public_key_bytes(key: "Ed25519PrivateKey") -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- writing -----------------------------------------------------------------------------------

class _HashingWriter:
    """A text sink that hashes exactly the bytes it writes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.sha = raw, hashlib.sha256()

    def write(self, s: str) -> int:
        b = s.encode("utf-8")
        self.sha.update(b)
        self.raw.write(b)
        return len(s)


class _UtcFormatter:
    """Unix microseconds -> '2026-11-30T12:00:00.123456Z', caching the seconds part."""

    def __init__(self) -> None:
        self._sec, self._prefix = -1, ""

    def __call__(self, us: int) -> str:
        sec, frac = divmod(us, 1_000_000)
        if sec != self._sec:
            self._sec, self._prefix = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{frac:06d}Z"


def _json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def export_log(log: AuditLog, out: str | os.PathLike[str], fmt: str = "jsonl",
               f: AuditFilter = AuditFilter(), *, sign_key: "Ed25519PrivateKey | None" = None,
               progress: Callable[[int, int], None] | None = None) -> ExportSummary:
    """Writes the records matching `f` (up to the head at start) to `out` as `fmt`."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    head_seq, head_hash = log.head()
    total = _count(log, f, head_seq) if progress else 0
    header = {"magic": MAGIC, "format": fmt, "node": log.node,
              "exported_at_us": time.time_ns() // 1000, "filter": f.as_dict(),
              "chain_head": {"seq": head_seq, "hash": head_hash}, "fields": list(COLUMNS),
              "signed": sign_key is not None}
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    try:
        return _write_export(log, out, tmp, fmt, f, header, head_seq, head_hash, sign_key, progress, total)
    finally:
        tmp.unlink(missing_ok=True)   # gone after the rename; a failed export leaves nothing


def _write_export(log: AuditLog, out: Path, tmp: Path, fmt: str, f: AuditFilter,
                  header: dict[str, Any], head_seq: int, head_hash: str,
                  sign_key: "Ed25519PrivateKey | None", progress: Callable[[int, int], None] | None,
                  total: int) -> ExportSummary:
    n, first, last, t0, t1 = 0, 0, 0, 0, 0
    utc = _UtcFormatter()
    with open(tmp, "wb", buffering=1 << 20) as raw:
        w = _HashingWriter(raw)
        buf = io.StringIO()          # rows are formatted into a chunk, hashed and written per chunk
        if fmt == "csv":
            w.write(CSV_HEADER_TAG + _json_line(header) + "\n")
            cw = csv.writer(buf, lineterminator="\n")
            cw.writerow(COLUMNS)
        elif fmt == "jsonl":
            w.write(_json_line({"header": header}) + "\n")
        else:
            w.write('{"header":' + _json_line(header) + ',\n"records":[\n')
        for row in log.iter_rows(f, max_seq=head_seq):
            seq, tus = row[0], row[1]
            out_row = (seq, utc(tus)) + row[1:]
            if fmt == "csv":
                cw.writerow(out_row)
            else:
                line = _json_line(dict(zip(COLUMNS, out_row)))
                buf.write(line + "\n" if fmt == "jsonl" else ("," if n else "") + line + "\n")
            n += 1
            first = first or seq
            last, t1 = seq, tus
            t0 = t0 or tus
            if n % 2000 == 0:
                w.write(buf.getvalue())
                buf.seek(0)
                buf.truncate()
                if progress:
                    progress(n, total)
        w.write(buf.getvalue())
        if fmt == "json":
            w.write("],\n")
        trailer: dict[str, Any] = {
            "magic": MAGIC, "records": n, "first_seq": first, "last_seq": last,
            "first_time_us": t0, "last_time_us": t1, "body_sha256": w.sha.hexdigest()}
        if sign_key is not None:
            trailer["signature"] = {
                "alg": "ed25519",
                "public_key": base64.b64encode(public_key_bytes(sign_key)).decode(),
                "value": base64.b64encode(sign_key.sign(_canonical(trailer))).decode()}
        line = _json_line(trailer)
        if fmt == "csv":
            raw.write((CSV_TRAILER_TAG + line + "\n").encode())
        elif fmt == "jsonl":
            raw.write((_json_line({"trailer": trailer}) + "\n").encode())
        else:
            raw.write(('"trailer":' + line + "}\n").encode())
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, out)
    if progress:
        progress(n, total)
    return ExportSummary(str(out), fmt, n, first, last, head_seq, head_hash, sign_key is not None)


def _count(log: AuditLog, f: AuditFilter, max_seq: int) -> int:
    import sqlalchemy as sa

    q = log._where(sa.select(sa.func.count()).select_from(audit_log), f)
    q = q.where(audit_log.c.seq <= max_seq)
    with log.engine.connect() as conn:
        return int(conn.execute(q).scalar())


# -- reading and verifying ----------------------------------------------------------------------

def _split_lines(path: Path) -> tuple[Iterator[bytes], Callable[[], tuple[bytes, str]]]:
    """Streams the body lines; after exhaustion, `done()` gives (last line, body sha256)."""
    sha = hashlib.sha256()
    state: dict[str, bytes] = {}

    def body() -> Iterator[bytes]:
        with open(path, "rb") as fh:
            prev = None
            for line in fh:
                if prev is not None:
                    sha.update(prev)
                    yield prev
                prev = line
            state["last"] = prev or b""

    return body(), lambda: (state.get("last", b""), sha.hexdigest())


def _parse_records(fmt: str, lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    text = (ln.decode("utf-8") for ln in lines)
    first = next(text, "")
    if fmt == "csv":
        yield {"__header__": json.loads(first[len(CSV_HEADER_TAG):])}
        reader = csv.reader(text)
        cols = next(reader, [])
        if tuple(cols) != COLUMNS:
            raise ExportError("the CSV column row is not the expected one")
        for row in reader:
            if len(row) != len(COLUMNS):
                raise ExportError(f"a CSV row has {len(row)} fields, expected {len(COLUMNS)}")
            d = dict(zip(COLUMNS, row))
            for k in INT_FIELDS:
                d[k] = int(d[k])
            yield d
    elif fmt == "jsonl":
        yield {"__header__": json.loads(first)["header"]}
        for ln in text:
            yield json.loads(ln)
    else:
        if not first.startswith('{"header":') or not first.rstrip().endswith(","):
            raise ExportError("the JSON export does not start with its header line")
        yield {"__header__": json.loads(first[len('{"header":'):].rstrip()[:-1])}
        if next(text, "").strip() != '"records":[':
            raise ExportError("the JSON export has no records array where expected")
        for ln in text:
            s = ln.strip()
            if s == "],":
                break
            yield json.loads(s.lstrip(","))
        else:
            raise ExportError("the JSON records array is not closed")
        for ln in text:
            raise ExportError("unexpected text after the JSON records array")


def detect_format(path: Path) -> str:
    with open(path, "rb") as fh:
        start = fh.read(32)
    if start.startswith(CSV_HEADER_TAG.encode()):
        return "csv"
    if start.startswith(b'{"header":{'):
        # jsonl: the first line is a whole object; json: the first line ends with ','
        with open(path, "rb") as fh:
            first = fh.readline().rstrip()
        return "json" if first.endswith(b",") else "jsonl"
    raise ExportError(f"{path} is not a musa-ops audit export")


def _parse_trailer(fmt: str, last: bytes) -> dict[str, Any]:
    s = last.decode("utf-8").rstrip("\n")
    if fmt == "csv":
        if not s.startswith(CSV_TRAILER_TAG):
            raise ExportError("the export has no trailer line (truncated?)")
        return json.loads(s[len(CSV_TRAILER_TAG):])
    if fmt == "jsonl":
        return json.loads(s)["trailer"]
    if not s.startswith('"trailer":') or not s.endswith("}"):
        raise ExportError("the export has no trailer line (truncated?)")
    return json.loads(s[len('"trailer":'):-1])


def verify_export(path: str | os.PathLike[str], public_key: bytes | None = None) -> ExportCheck:
    """Checks digest, signature (pinned to `public_key` if given) and every record."""
    try:
        return _verify_export(Path(path), public_key)
    except ExportError as exc:
        return ExportCheck(False, 0, False, str(exc))
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, csv.Error) as exc:
        return ExportCheck(False, 0, False, f"the export is malformed: {type(exc).__name__}: {exc}")


def _b64(text: str) -> bytes:
    """Strict base64: only the canonical spelling of the bytes is accepted."""
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text:
        raise ExportError("the signature block is not canonical base64")
    return raw


def _verify_export(path: Path, public_key: bytes | None) -> ExportCheck:
    fmt = detect_format(path)
    lines, done = _split_lines(path)
    header: dict[str, Any] = {}
    n, prev_seq, prev_hash, first = 0, 0, "", 0
    bad = ""
    for d in _parse_records(fmt, lines):
        if "__header__" in d:
            header = d["__header__"]
            if header.get("magic") != MAGIC:
                raise ExportError("the header is not a musa-ops audit export header")
            continue
        if bad:
            continue
        rec = {k: d[k] for k in FIELDS}
        if entry_hash(rec) != rec["hash"]:
            bad = f"record {rec['seq']} does not match its hash"
        elif prev_seq and rec["seq"] <= prev_seq:
            bad = f"record {rec['seq']} is out of order after {prev_seq}"
        elif rec["seq"] == prev_seq + 1 and prev_seq and rec["prev_hash"] != prev_hash:
            bad = f"record {rec['seq']} does not link to record {prev_seq}"
        elif rec["seq"] == 1 and rec["prev_hash"] != GENESIS_HASH:
            bad = "record 1 does not start the chain"
        n += 1
        first = first or rec["seq"]
        prev_seq, prev_hash = rec["seq"], rec["hash"]
    last, body_sha = done()
    trailer = _parse_trailer(fmt, last)
    signed = "signature" in trailer
    if set(trailer) != TRAILER_KEYS | ({"signature"} if signed else set()):
        raise ExportError("the trailer has unexpected or missing fields")
    if bool(header.get("signed")) != signed:
        raise ExportError("the header says the export is signed but the trailer carries no signature"
                          if header.get("signed") else "the trailer carries a signature the header does not announce")
    head = header.get("chain_head", {})
    base = dict(records=n, signed=signed, head_seq=int(head.get("seq", 0)),
                head_hash=head.get("hash", ""))
    if trailer.get("body_sha256") != body_sha:
        return ExportCheck(False, reason="the file was changed: its contents do not match the trailer's digest", **base)
    key_sha = ""
    if signed:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        sig = trailer["signature"]
        if not isinstance(sig, dict) or set(sig) != {"alg", "public_key", "value"} or sig["alg"] != "ed25519":
            raise ExportError("the signature block is not an Ed25519 signature")
        unsigned = {k: v for k, v in trailer.items() if k != "signature"}
        raw_key = _b64(sig["public_key"])
        key_sha = hashlib.sha256(raw_key).hexdigest()
        if public_key is not None and raw_key != public_key:
            return ExportCheck(False, reason="the export was signed by a different key than the one given", public_key_sha256=key_sha, **base)
        try:
            Ed25519PublicKey.from_public_bytes(raw_key).verify(_b64(sig["value"]), _canonical(unsigned))
        except InvalidSignature:
            return ExportCheck(False, reason="the signature does not verify", public_key_sha256=key_sha, **base)
    elif public_key is not None:
        return ExportCheck(False, reason="the export is not signed", **base)
    if bad:
        return ExportCheck(False, reason=bad, public_key_sha256=key_sha, **base)
    if (trailer.get("records"), trailer.get("first_seq"), trailer.get("last_seq")) != (n, first, prev_seq):
        return ExportCheck(False, reason="the trailer's count or range does not match the records", public_key_sha256=key_sha, **base)
    complete = first in (0, 1) and n == prev_seq == base["head_seq"]
    if complete and n and prev_hash != base["head_hash"]:
        return ExportCheck(False, reason="the last record is not the chain head named in the header", public_key_sha256=key_sha, **base)
    return ExportCheck(True, public_key_sha256=key_sha, complete_chain=complete, **base)


def read_export(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of an export as dicts of the stored fields (for tests and tools)."""
    p = Path(path)
    lines, _ = _split_lines(p)
    for d in _parse_records(detect_format(p), lines):
        if "__header__" not in d:
            yield {k: d[k] for k in FIELDS}
