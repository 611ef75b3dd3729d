"""The node's tamper-evident audit log: an append-only, hash-chained table.

Each record carries the SHA-256 of the previous one and its own hash over a canonical
encoding, so editing, deleting, reordering or truncating records breaks the chain and
`verify()` names the first broken link. Appends go through one writer thread with group
commit: concurrent `record()` calls share one durable (fsync'd) transaction, and each
returns only once its own record has been committed. SQLite (WAL, synchronous FULL) is
the default; PostgreSQL works by URL. The code has no update or delete path.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from ..group_commit import GroupCommitWriter
from .caller import Caller, current_caller, local_caller

Outcome = Literal["ok", "denied", "failed"]
OUTCOMES = ("ok", "denied", "failed")
GENESIS_HASH = "0" * 64
PAGE = 2000               # rows per keyset page when streaming

_meta = sa.MetaData()
audit_log = sa.Table(
    "audit_log", _meta,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("time_us", sa.BigInteger), sa.Column("node", sa.Text),
    sa.Column("actor", sa.Text), sa.Column("role", sa.Text), sa.Column("client", sa.Text),
    sa.Column("action", sa.Text), sa.Column("target", sa.Text),
    sa.Column("params_json", sa.Text), sa.Column("outcome", sa.Text),
    sa.Column("error", sa.Text), sa.Column("prev_hash", sa.String(64)),
    sa.Column("hash", sa.String(64)),
)
audit_head = sa.Table(
    "audit_head", _meta,
    sa.Column("id", sa.Integer, primary_key=True), sa.Column("seq", sa.BigInteger),
    sa.Column("hash", sa.String(64)),
)
FIELDS = tuple(c.name for c in audit_log.columns)


class AuditError(RuntimeError):
    """The audit store could not do what was asked; the message says why."""


class AuditEntry(NamedTuple):
    """One record of the chain, as stored (a tuple in FIELDS order: cheap to make and insert)."""

    seq: int
    time_us: int
    node: str
    actor: str
    role: str
    client: str
    action: str
    target: str
    params_json: str
    outcome: str
    error: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(FIELDS, self))


@dataclass(frozen=True)
class AuditFilter:
    """Which records a query or export wants. Empty strings and zeros mean any."""

    since_us: int = 0       # inclusive
    until_us: int = 0       # exclusive
    actor: str = ""
    action: str = ""
    node: str = ""
    outcome: str = ""       # "", "ok", "denied" or "failed"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    head_hash: str
    first_broken_seq: int = 0
    reason: str = ""


def canonical_params(params: dict[str, Any] | None) -> str:
    """Parameters as canonical JSON (sorted keys, no spaces, UTF-8)."""
    return json.dumps(params or {}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)


_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def record_hash(seq: int, time_us: int, node: str, actor: str, role: str, client: str,
                action: str, target: str, params_json: str, outcome: str, error: str,
                prev_hash: str) -> str:
    """SHA-256 (hex) over the canonical encoding: a JSON array of the fields in order."""
    body = _CANONICAL.encode([seq, time_us, node, actor, role, client, action, target, params_json,
                              outcome, error, prev_hash])
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def entry_hash(e: AuditEntry | dict[str, Any]) -> str:
    d = e if isinstance(e, dict) else e.as_dict()
    return record_hash(int(d["seq"]), int(d["time_us"]), d["node"], d["actor"], d["role"],
                       d["client"], d["action"], d["target"], d["params_json"],
                       d["outcome"], d["error"], d["prev_hash"])


def normalize_db_url(db_url: str) -> str:
    """A bare filesystem path means SQLite; anything with '://' is a SQLAlchemy URL."""
    if "://" in db_url:
        return db_url
    return f"sqlite:///{Path(db_url).expanduser().resolve()}"


def create_db_engine(db_url: str) -> Engine:
    """An engine with the durability settings the audit log needs.

    SQLite: WAL, synchronous=FULL, a busy timeout, and explicit BEGIN (IMMEDIATE for the
    writer) so read-modify-write of the chain head is atomic across processes.
    """
    url = sa.make_url(normalize_db_url(db_url))
    if url.get_backend_name() != "sqlite":
        args = {"connect_timeout": 10} if url.get_backend_name() == "postgresql" else {}
        return sa.create_engine(url, pool_pre_ping=True, connect_args=args)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        dbapi_conn.isolation_level = None          # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def shown_db_url(db_url: str) -> str:
    """The URL as it may be printed: SQLite as its file, others without the password."""
    try:
        url = sa.make_url(normalize_db_url(db_url))
    except sa.exc.ArgumentError:
        return db_url
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def _reason(exc: BaseException) -> str:
    """The driver's own words, on one line (not SQLAlchemy's wrapping and links)."""
    inner = getattr(exc, "orig", None) or exc
    return " ".join(str(inner).split()).rstrip(".") or type(inner).__name__


def open_database(db_url: str, *, must_exist: bool = False) -> Engine:
    """Engine on `db_url` with the schema migrated to head. Never creates folders: a SQLite
    file's folder must exist. With `must_exist` (read-only commands) the database must
    already hold musad's tables. Raises AuditError with one sentence when it cannot be used."""
    from .migrations import upgrade

    shown = shown_db_url(db_url)
    try:
        url = sa.make_url(normalize_db_url(db_url))
    except sa.exc.ArgumentError:
        raise AuditError(f"the database URL {db_url!r} cannot be parsed; give a SQLite file path or a URL "
                         "such as postgresql+psycopg://USER@HOST/DB") from None
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if must_exist and not path.is_file():
            raise AuditError(f"the database {path} does not exist; check --db or --state-dir "
                             "(musad serve creates it on first start)")
        if not path.parent.is_dir():
            raise AuditError(f"the folder {path.parent} of the database {path} does not exist; "
                             "create it or fix --db / storage.db_url")
    try:
        engine = create_db_engine(db_url)
    except sa.exc.NoSuchModuleError:
        raise AuditError(f"the database URL {shown} names an unknown database kind {url.drivername!r}; "
                         "musad stores its data in SQLite (a file path) or PostgreSQL "
                         "(postgresql+psycopg://USER@HOST/DB)") from None
    except ImportError as exc:
        raise AuditError(f"the database driver for {url.drivername} is not installed ({exc}); "
                         "musad stores its data in SQLite or PostgreSQL (postgresql+psycopg://)") from None
    try:
        if must_exist and url.get_backend_name() != "sqlite":
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table("audit_log"):
                    raise AuditError(f"the database {shown} holds no musad tables; check --db "
                                     "(musad serve creates them on first start)")
        upgrade(engine)
    except AuditError:
        engine.dispose()
        raise
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        engine.dispose()
        raise AuditError(f"cannot connect to the database {shown}: {_reason(exc)}; check --db or "
                         "storage.db_url and that the database server is running") from exc
    except Exception as exc:
        engine.dispose()
        raise AuditError(f"cannot open the daemon database {shown}: {_reason(exc)}") from exc
    return engine


def _insert_sql(conn: Connection) -> str:
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return f"INSERT INTO audit_log ({', '.join(FIELDS)}) VALUES ({', '.join([mark] * len(FIELDS))})"


class _Pending(NamedTuple):
    """One record waiting for the writer: the caller's part of it."""

    caller: Caller
    action: str
    target: str
    params_json: str
    outcome: str
    error: str


def _write_failed(exc: Exception) -> AuditError:
    return AuditError(f"the audit record could not be written: {exc}")


class AuditLog:
    """Append-only hash-chained store. Open with `AuditLog.open(db_url, node=hostname)`."""

    def __init__(self, engine: Engine, node: str, *, owns_engine: bool = True) -> None:
        self.engine = engine
        self.node = node
        self._owns_engine = owns_engine
        self._writer: GroupCommitWriter[_Pending, AuditEntry] = GroupCommitWriter(
            self._append, _write_failed, name="audit-writer")

    @classmethod
    def open(cls, db_url: str, node: str, *, must_exist: bool = False) -> "AuditLog":
        """Opens (creating and migrating as needed, unless `must_exist`) the store at `db_url`."""
        return cls(open_database(db_url, must_exist=must_exist), node)

    # -- appending ---------------------------------------------------------------------

    def _pending(self, action: str, target: str, params: dict[str, Any] | None, outcome: str,
                 error: str, caller: Caller | None) -> _Pending:
        if self._writer.closed:
            raise AuditError("the audit log is closed")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        return _Pending(caller or current_caller(), action, target or "",
                        canonical_params(params), outcome, error or "")

    async def record(self, action: str, target: str = "", params: dict[str, Any] | None = None,
                     outcome: Outcome = "ok", error: str = "",
                     caller: Caller | None = None) -> AuditEntry:
        """Appends one record; returns once it is durable. Raises AuditError if it is not."""
        return await self._writer.submit(self._pending(action, target, params, outcome, error, caller))

    def record_sync(self, action: str, target: str = "", params: dict[str, Any] | None = None,
                    outcome: Outcome = "ok", error: str = "",
                    caller: Caller | None = None, timeout: float | None = 60.0) -> AuditEntry:
        """Blocking `record()` for threads and the CLI (never call it on the event loop)."""
        return self._writer.submit_sync(self._pending(action, target, params, outcome, error, caller),
                                        timeout)

    def _append(self, batch: list[_Pending]) -> list[AuditEntry]:
        """One transaction: read the head, chain and insert the batch, move the head."""
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn:
            with conn.begin():
                head_q = sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
                if conn.dialect.name == "postgresql":
                    head_q = head_q.with_for_update()
                head = conn.execute(head_q).first()
                if head is None:
                    raise AuditError("the audit head row is missing (the database was edited); "
                                     "run 'musad audit verify'")
                seq, prev = head
                prev = prev or GENESIS_HASH
                now_us = time.time_ns() // 1000
                entries = []
                for p in batch:
                    seq += 1
                    c = p.caller
                    h = record_hash(seq, now_us, self.node, c.actor, c.role, c.client, p.action,
                                    p.target, p.params_json, p.outcome, p.error, prev)
                    entries.append(AuditEntry(seq, now_us, self.node, c.actor, c.role, c.client,
                                              p.action, p.target, p.params_json, p.outcome,
                                              p.error, prev, h))
                    prev = h
                # Plain tuples through the driver: the Core insert's per-row work is most
                # of an append's cost.
                conn.exec_driver_sql(_insert_sql(conn), entries)
                conn.execute(audit_head.update().where(audit_head.c.id == 1)
                             .values(seq=seq, hash=prev))
        return entries

    # -- reading -----------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, "") when empty; (-1, "") when the head row is gone."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash)
                               .where(audit_head.c.id == 1)).first()
        return (-1, "") if row is None else (int(row[0]), row[1] or "")

    @staticmethod
    def _where(q: sa.Select, f: AuditFilter) -> sa.Select:
        c = audit_log.c
        if f.since_us:
            q = q.where(c.time_us >= f.since_us)
        if f.until_us:
            q = q.where(c.time_us < f.until_us)
        for name in ("actor", "action", "node", "outcome"):
            value = getattr(f, name)
            if value:
                q = q.where(c[name] == value)
        return q

    def query(self, f: AuditFilter = AuditFilter(), after_seq: int = 0, limit: int = 1000,
              descending: bool = False, max_seq: int = 0) -> list[AuditEntry]:
        """One page of matching records in seq order (keyset paging by `after_seq`)."""
        c = audit_log.c
        q = self._where(sa.select(audit_log), f)
        if after_seq:
            q = q.where(c.seq < after_seq if descending else c.seq > after_seq)
        if max_seq:
            q = q.where(c.seq <= max_seq)
        q = q.order_by(c.seq.desc() if descending else c.seq).limit(max(1, limit))
        with self.engine.connect() as conn:
            return [AuditEntry(*row) for row in conn.execute(q)]

    def iter_rows(self, f: AuditFilter = AuditFilter(), max_seq: int = 0,
                  page: int = PAGE) -> Iterator[tuple]:
        """Matching rows (tuple-like, FIELDS order), a page at a time (constant memory)."""
        c = audit_log.c
        base = self._where(sa.select(audit_log), f)
        if max_seq:
            base = base.where(c.seq <= max_seq)
        after = 0
        with self.engine.connect() as conn:
            while True:
                q = base.where(c.seq > after).order_by(c.seq).limit(page)
                rows = conn.execute(q).fetchall()   # Rows index and slice like tuples
                yield from rows
                if len(rows) < page:
                    return
                after = rows[-1][0]

    def iter_records(self, f: AuditFilter = AuditFilter(), max_seq: int = 0,
                     page: int = PAGE) -> Iterator[AuditEntry]:
        """All matching records in seq order, a page at a time (constant memory)."""
        for row in self.iter_rows(f, max_seq, page):
            yield AuditEntry(*row)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar())

    def verify(self) -> VerifyResult:
        """Walks the chain from record 1; names the first broken link."""
        head_seq, head_hash = self.head()
        expected_seq, prev, n = 1, GENESIS_HASH, 0
        dumps, sha256 = json.dumps, hashlib.sha256
        for row in self.iter_rows():
            seq = row[0]
            if seq != expected_seq:
                return VerifyResult(False, n, head_hash, expected_seq,
                                    f"record {expected_seq} is missing (the next one is {seq})")
            if row[11] != prev:
                return VerifyResult(False, n, head_hash, seq,
                                    f"record {seq} does not link to record {seq - 1} (prev_hash differs)")
            body = dumps(list(row[:12]), separators=(",", ":"), ensure_ascii=False)
            if sha256(body.encode("utf-8")).hexdigest() != row[12]:
                return VerifyResult(False, n, head_hash, seq,
                                    f"record {seq} was altered (its hash does not match its contents)")
            prev, expected_seq, n = row[12], expected_seq + 1, n + 1
        last_seq = expected_seq - 1
        if head_seq < 0:
            return VerifyResult(False, n, "", last_seq + 1, "the head pointer row is missing (the database was edited)")
        if last_seq != head_seq or (head_seq and prev != head_hash):
            if last_seq < head_seq:
                return VerifyResult(False, n, head_hash, last_seq + 1,
                                    f"the log ends at record {last_seq} but its head is record {head_seq}: the tail was removed")
            return VerifyResult(False, n, head_hash, head_seq or 1,
                                f"the head pointer (record {head_seq}) does not match the last record ({last_seq})")
        return VerifyResult(True, n, head_hash)

    def close(self) -> None:
        """Flushes pending records, stops the writer, releases the database."""
        if self._writer.closed:
            return
        self._writer.close()
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def config_params(config: Any) -> dict[str, Any]:
    """The config as audit parameters: every section, keys sorted (it holds no secrets:
    TLS keys and tokens are referred to by path or kept out of it)."""
    import dataclasses

    params = json.loads(canonical_params(dataclasses.asdict(config)))
    storage = params.get("storage", {})
    if storage.get("db_url"):
        storage["db_url"] = sa.make_url(normalize_db_url(storage["db_url"])).render_as_string(hide_password=True)
    return params


def record_config_if_changed(log_: AuditLog, config: Any) -> AuditEntry | None:
    """Records "config.change" at start when the effective config differs from the last
    one recorded on this node (the first start records it too). Blocking."""
    params = config_params(config)
    last = [e for e in log_.query(AuditFilter(action="config.change", node=log_.node),
                                  limit=1, descending=True)]
    before = json.loads(last[0].params_json).get("config", {}) if last else {}
    if before == params:
        return None
    changed = sorted(f"{s}.{k}" for s in set(params) | set(before)
                     for k in set(params.get(s, {})) | set(before.get(s, {}))
                     if params.get(s, {}).get(k) != before.get(s, {}).get(k))
    return log_.record_sync("config.change", "musad", {"changed": changed, "config": params},
                            caller=local_caller())
