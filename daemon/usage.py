"""Usage accounting: one row per inference request, summed per key x model x hour.

Rows live in the daemon database beside the audit log (table `usage_requests`, created by
the trust migrations; SQLite by default, PostgreSQL by URL). The primary key is the
request's server-side id and a row is inserted only if absent, so writing a request twice
(a retry after an error) counts it once; a request is written before its final answer
leaves, so an answer a client received is counted even across kill -9, and one it did not
receive is counted at most once. Appends go through one writer thread with group commit
(like the audit log): concurrent `record()` calls share one durable transaction.

`UsageLog.query` sums rows per hour bucket (keyset-paged by (hour, key, model));
`export` writes the same buckets as CSV or JSON lines. Per-key Prometheus counters
(`musad:key_*_total`, labelled by key name, never the secret) are collected at scrape time
from in-memory totals that `record()` keeps.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import IO, Any, Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .group_commit import GroupCommitWriter

HOUR_S = 3600
OUTCOMES = ("ok", "error", "cancelled", "rate_limited")
EXPORT_FORMATS = ("csv", "jsonl")

_meta = sa.MetaData()
usage_requests = sa.Table(
    "usage_requests", _meta,
    sa.Column("id", sa.String(64), primary_key=True),        # the request's server-side id
    sa.Column("hour_s", sa.BigInteger),                      # epoch seconds of the hour it ended in
    sa.Column("time_us", sa.BigInteger),
    sa.Column("key", sa.String(128)),                        # token name (or CN / anonymous)
    sa.Column("model", sa.Text),
    sa.Column("prompt_tokens", sa.BigInteger),
    sa.Column("completion_tokens", sa.BigInteger),
    sa.Column("outcome", sa.String(16)),                     # one of OUTCOMES
)


class UsageError(RuntimeError):
    """The usage store could not do what was asked; the message says why."""


@dataclass(frozen=True)
class UsageRecord:
    id: str
    key: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    outcome: str          # ok | error | cancelled | rate_limited
    time_us: int = 0      # 0 = now


@dataclass(frozen=True)
class UsageBucket:
    """Sums for one key x model x hour."""

    hour_s: int
    key: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int
    rate_limited: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UsageFilter:
    key: str = ""
    model: str = ""
    since_s: int = 0       # inclusive, rounded down to its hour
    until_s: int = 0       # exclusive


BUCKET_FIELDS = tuple(UsageBucket.__dataclass_fields__)


def _insert_ignore(conn: sa.Connection, rows: list[dict]) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
        conn.execute(insert(usage_requests).on_conflict_do_nothing(index_elements=["id"]), rows)
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
        conn.execute(insert(usage_requests).on_conflict_do_nothing(index_elements=["id"]), rows)
    else:  # pragma: no cover - the daemon supports SQLite and PostgreSQL
        for r in rows:
            if conn.execute(sa.select(usage_requests.c.id).where(usage_requests.c.id == r["id"])).first() is None:
                conn.execute(usage_requests.insert(), r)


class _Totals:
    """In-memory per-key totals since start, for Prometheus (scrape reads, writer adds)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by: dict[tuple[str, str], list[int]] = {}   # (key, outcome) -> [requests, prompt, completion]

    def add(self, r: UsageRecord) -> None:
        with self.lock:
            v = self.by.setdefault((r.key, r.outcome), [0, 0, 0])
            v[0] += 1
            v[1] += r.prompt_tokens
            v[2] += r.completion_tokens

    def snapshot(self) -> dict[tuple[str, str], list[int]]:
        with self.lock:
            return {k: list(v) for k, v in self.by.items()}


class UsageCollector:
    """Prometheus collector: musad:key_requests_total{key,outcome}, key_prompt_tokens_total,
    key_completion_tokens_total (labelled by key name)."""

    def __init__(self, totals: _Totals) -> None:
        self._totals = totals

    def collect(self) -> Iterable:
        from prometheus_client.core import CounterMetricFamily

        req = CounterMetricFamily("musad:key_requests", "Inference requests per key and outcome.",
                                  labels=["key", "outcome"])
        pt = CounterMetricFamily("musad:key_prompt_tokens", "Prompt tokens per key.", labels=["key"])
        ct = CounterMetricFamily("musad:key_completion_tokens", "Completion tokens per key.", labels=["key"])
        per_key: dict[str, list[int]] = {}
        for (key, outcome), (n, p, c) in sorted(self._totals.snapshot().items()):
            req.add_metric([key, outcome], n)
            k = per_key.setdefault(key, [0, 0])
            k[0] += p
            k[1] += c
        for key, (p, c) in per_key.items():
            pt.add_metric([key], p)
            ct.add_metric([key], c)
        return [req, pt, ct]


class UsageLog:
    """Per-request usage rows on the daemon database's engine (shared with the audit log)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.totals = _Totals()
        self._writer: GroupCommitWriter[UsageRecord, None] = GroupCommitWriter(
            self._commit, _write_failed, name="usage-writer")

    # -- appending ------------------------------------------------------------------------

    async def record(self, r: UsageRecord) -> None:
        """Writes one request's row; returns once it is durable (raises UsageError if not)."""
        if self._writer.closed:
            raise UsageError("the usage log is closed")
        await self._writer.submit(r)

    def record_sync(self, r: UsageRecord, timeout: float = 60.0) -> None:
        if self._writer.closed:
            raise UsageError("the usage log is closed")
        self._writer.submit_sync(r, timeout)

    def _commit(self, records: list[UsageRecord]) -> list[None]:
        """The writer's transaction; the in-memory totals count only what was committed."""
        self._append(records)
        for r in records:
            self.totals.add(r)
        return [None] * len(records)

    def _append(self, records: list[UsageRecord]) -> None:
        now_us = time.time_ns() // 1000
        rows, seen = [], set()
        for r in records:
            if r.id in seen:
                continue
            seen.add(r.id)
            t = r.time_us or now_us
            rows.append({"id": r.id, "hour_s": t // 1_000_000 // HOUR_S * HOUR_S, "time_us": t,
                         "key": r.key, "model": r.model, "prompt_tokens": r.prompt_tokens,
                         "completion_tokens": r.completion_tokens, "outcome": r.outcome})
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            _insert_ignore(conn, rows)

    # -- reading --------------------------------------------------------------------------

    @staticmethod
    def _where(q: sa.Select, f: UsageFilter) -> sa.Select:
        c = usage_requests.c
        if f.key:
            q = q.where(c.key == f.key)
        if f.model:
            q = q.where(c.model == f.model)
        if f.since_s:
            q = q.where(c.hour_s >= f.since_s // HOUR_S * HOUR_S)
        if f.until_s:
            q = q.where(c.hour_s < f.until_s)
        return q

    def query(self, f: UsageFilter = UsageFilter(), after: tuple[int, str, str] | None = None,
              limit: int = 1000) -> list[UsageBucket]:
        """One page of hourly buckets in (hour, key, model) order, after the bucket `after`."""
        c = usage_requests.c
        is_err = sa.case((c.outcome == "error", 1), else_=0)
        is_rl = sa.case((c.outcome == "rate_limited", 1), else_=0)
        q = self._where(sa.select(
            c.hour_s, c.key, c.model,
            sa.func.sum(sa.case((c.outcome == "rate_limited", 0), else_=1)),
            sa.func.sum(c.prompt_tokens), sa.func.sum(c.completion_tokens),
            sa.func.sum(is_err), sa.func.sum(is_rl)), f)
        if after is not None:
            h, k, m = after
            q = q.where(sa.or_(c.hour_s > h, sa.and_(c.hour_s == h, c.key > k),
                               sa.and_(c.hour_s == h, c.key == k, c.model > m)))
        q = q.group_by(c.hour_s, c.key, c.model).order_by(c.hour_s, c.key, c.model).limit(max(1, limit))
        with self.engine.connect() as conn:
            return [UsageBucket(int(r[0]), r[1], r[2], *(int(v or 0) for v in r[3:])) for r in conn.execute(q)]

    def iter_buckets(self, f: UsageFilter = UsageFilter(), page: int = 1000) -> Iterator[UsageBucket]:
        after = None
        while True:
            rows = self.query(f, after, page)
            yield from rows
            if len(rows) < page:
                return
            last = rows[-1]
            after = (last.hour_s, last.key, last.model)

    def tokens_since(self, key: str, since_s: int) -> int:
        """Prompt + completion tokens of `key` since `since_s` (the daily quota's start)."""
        c = usage_requests.c
        q = sa.select(sa.func.sum(c.prompt_tokens + c.completion_tokens)).where(
            c.key == key, c.time_us >= since_s * 1_000_000)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def count(self, f: UsageFilter = UsageFilter()) -> int:
        q = self._where(sa.select(sa.func.count()).select_from(usage_requests), f)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar())

    def close(self) -> None:
        self._writer.close()


def _write_failed(exc: Exception) -> UsageError:
    return UsageError(f"the usage record could not be written: {exc}")


def export_usage(log_: UsageLog, out: IO[str], fmt: str, f: UsageFilter = UsageFilter()) -> int:
    """Writes the hourly buckets matching `f` to `out` as CSV (with a header) or JSON lines;
    returns the number of buckets written."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    n = 0
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(BUCKET_FIELDS)
    for b in log_.iter_buckets(f):
        if writer is not None:
            writer.writerow([getattr(b, k) for k in BUCKET_FIELDS])
        else:
            out.write(json.dumps(b.as_dict(), separators=(",", ":"), ensure_ascii=False) + "\n")
        n += 1
    return n


def export_text(log_: UsageLog, fmt: str, f: UsageFilter = UsageFilter()) -> str:
    buf = io.StringIO()
    export_usage(log_, buf, fmt, f)
    return buf.getvalue()


def last_used(log_: UsageLog) -> dict[str, int]:
    """Key name -> time (epoch µs) of its last recorded request."""
    c = usage_requests.c
    with log_.engine.connect() as conn:
        return {k: int(t) for k, t in conn.execute(sa.select(c.key, sa.func.max(c.time_us)).group_by(c.key))}
