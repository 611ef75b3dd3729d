"""Audit log speed: durable appends per second (SQLite, PostgreSQL) and a 1,000,000-record
CSV export's time and peak memory.

Figures and their baselines, all measured in this run:
- sqlite_appends_s: 64 concurrent `record()` callers (group commit, WAL, synchronous=FULL)
  vs sqlite_sequential_appends_s: one caller awaiting each record (one fsync per record).
- postgres_appends_s vs postgres_sequential_appends_s, the same on the PostgreSQL in
  MUSA_OPS_TEST_POSTGRES_URL (a scratch schema, dropped after); null when unset.
- export_seconds and export_peak_rss_mb: `export_log(log, ..., "csv")` of N records in a
  fresh process (peak RSS of that whole process), vs raw_dump_seconds: sqlite3 `SELECT *`
  into csv.writer with no paging, hashing-free and header-free (the floor).
- verify_seconds: `verify()` over the same N records.
Goals: >= 5,000 appends/s on SQLite; export < 30 s and < 200 MB.
`--records N` (default 1,000,000), `--quick` (100,000 and shorter bursts), `--json`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from musaops.daemon.trust.audit import AuditLog, _Pending
from musaops.daemon.trust.audit_export import export_log
from musaops.daemon.trust.caller import Caller


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


async def _appends(log_: AuditLog, clients: int, per_client: int) -> float:
    async def client(i: int) -> None:
        for j in range(per_client):
            await log_.record("node.Deploy", f"model-{i}", {"j": j, "dtype": "bfloat16"}, "ok",
                              caller=Caller(f"user{i}", "operator", "ipv4:10.0.0.1:5000"))
    t = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return clients * per_client / (time.perf_counter() - t)


def measure_appends(url: str, quick: bool) -> tuple[float, float]:
    with AuditLog.open(url, node="bench") as lg:
        seq_rate = asyncio.run(_appends(lg, 1, 100 if quick else 300))
        group_rate = asyncio.run(_appends(lg, 64, 50 if quick else 200))
        assert lg.verify().ok
    return group_rate, seq_rate


def fill(db: str, n: int) -> None:
    """N records through the writer's own transaction code, in batches of 2,000."""
    with AuditLog.open(db, node="bench") as lg:
        done = 0
        while done < n:
            k = min(2000, n - done)
            lg._append([_Pending(Caller(f"user{(done + i) % 17}", "operator", "ipv4:10.0.0.1:5000"),
                                 "node.Deploy" if i % 3 else "inference.Generate", f"model-{i % 5}",
                                 json.dumps({"i": done + i, "prompt_sha256": "ab" * 32}), "ok", "")
                        for i in range(k)])
            done += k


def export_child(db: str, out: str) -> None:
    """Runs in a fresh process so its peak RSS is the export's own."""
    with AuditLog.open(db, node="bench") as lg:
        t = time.perf_counter()
        s = export_log(lg, out, "csv")
        secs = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": secs, "records": s.records, "peak_rss_mb": peak_kb / 1024}))


def raw_dump(db: str, out: str) -> float:
    t = time.perf_counter()
    con = sqlite3.connect(db)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        for row in con.execute("SELECT * FROM audit_log ORDER BY seq"):
            w.writerow(row)
    con.close()
    return time.perf_counter() - t


def postgres_appends(quick: bool) -> tuple[float | None, float | None]:
    url = os.environ.get("MUSA_OPS_TEST_POSTGRES_URL")
    if not url:
        return None, None
    import sqlalchemy as sa

    schema = f"musaops_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        return measure_appends(scoped.render_as_string(hide_password=False), quick)
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--export-child", nargs=2, metavar=("DB", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export_child:
        export_child(*args.export_child)
        return 0
    n = 100_000 if args.quick and args.records == 1_000_000 else args.records
    with tempfile.TemporaryDirectory() as tmp:
        log("sqlite appends ...")
        sq_group, sq_seq = measure_appends(str(Path(tmp) / "appends.db"), args.quick)
        log("postgres appends ...")
        pg_group, pg_seq = postgres_appends(args.quick)
        db = str(Path(tmp) / "big.db")
        log(f"filling {n} records ...")
        t = time.perf_counter()
        fill(db, n)
        fill_s = time.perf_counter() - t
        log("export ...")
        child = subprocess.run([sys.executable, __file__, "--export-child", db, str(Path(tmp) / "e.csv")],
                               capture_output=True, text=True, check=True)
        exp = json.loads(child.stdout.strip().splitlines()[-1])
        raw_s = raw_dump(db, str(Path(tmp) / "raw.csv"))
        log("verify ...")
        with AuditLog.open(db, node="bench") as lg:
            t = time.perf_counter()
            v = lg.verify()
            verify_s = time.perf_counter() - t
        assert v.ok and v.records == n
    result = {
        "bench": "audit",
        "sqlite_appends_s": round(sq_group, 1),
        "sqlite_sequential_appends_s": round(sq_seq, 1),
        "sqlite_group_commit_ratio": round(sq_group / sq_seq, 2),
        "postgres_appends_s": None if pg_group is None else round(pg_group, 1),
        "postgres_sequential_appends_s": None if pg_seq is None else round(pg_seq, 1),
        "postgres_group_commit_ratio": None if pg_group is None else round(pg_group / pg_seq, 2),
        "export_records": exp["records"],
        "export_seconds": round(exp["seconds"], 2),
        "export_peak_rss_mb": round(exp["peak_rss_mb"], 1),
        "raw_dump_seconds": round(raw_s, 2),
        "export_vs_raw_dump_ratio": round(exp["seconds"] / raw_s, 2),
        "verify_seconds": round(verify_s, 2),
        "fill_seconds": round(fill_s, 2),
        "goals": {"sqlite_appends_s": ">= 5000", "export_seconds": "< 30 (1M records)",
                  "export_peak_rss_mb": "< 200"},
        "goals_met": sq_group >= 5000 and exp["seconds"] < 30 * n / 1_000_000 and exp["peak_rss_mb"] < 200,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
