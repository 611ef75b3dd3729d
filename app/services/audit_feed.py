"""Audit records from several daemons and the console's own operator log, merged by time.

Qt-free. Each source is paged newest-first: a daemon through Audit.Query on the NodeHub
(`hub.audit_query`, the answer back through its listener, as every other call), the
operator log through the store worker. `AuditMerger` does a
k-way merge of the pages, releasing a row only when every source that still has records
has a buffered row, so the merged order is exact however the pages arrive.
"""

from __future__ import annotations

import collections
import getpass
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .operator_log import parse_detail

CONSOLE_SOURCE = "console"
OUTCOMES = ("ok", "denied", "failed")
PAGE_SIZE = 200


@dataclass(frozen=True)
class AuditRow:
    """One record as the console shows and exports it."""

    source: str        # node id, or "console" for this workstation's operator log
    node: str          # the daemon's hostname, or "this console"
    seq: int           # position in the node's chain (the log row id for the console)
    time_us: int       # UTC, Unix microseconds
    actor: str
    role: str
    client: str
    action: str
    target: str
    params_json: str
    outcome: str       # ok | denied | failed
    error: str
    hash: str          # empty for console rows (the console log is not chained)


EXPORT_FIELDS = ("time_us", "node", "source", "seq", "actor", "role", "client", "action", "target",
                 "params_json", "outcome", "error", "hash")


@dataclass(frozen=True)
class AuditFilterSpec:
    """What the Audit view shows. Empty strings and zeros mean any."""

    since_us: int = 0
    until_us: int = 0
    actor: str = ""
    action: str = ""
    outcome: str = ""
    sources: tuple[str, ...] = ()     # node ids (and/or "console") to include


@dataclass(frozen=True)
class Page:
    source: str
    rows: tuple[AuditRow, ...]
    exhausted: bool
    error: str = ""
    cursor: int = 0     # where the next page starts (the lowest seq read); 0 = last row's seq


@dataclass(frozen=True)
class VerifyOutcome:
    source: str
    ok: bool
    records: int
    head_hash: str
    first_broken_seq: int = 0
    reason: str = ""
    error: str = ""     # the call itself failed (unreachable, permission denied)


class PageFetcher(Protocol):
    """Fetches one page newest-first: records older than `cursor` (0 = the newest)."""

    def fetch(self, spec: AuditFilterSpec, cursor: int, limit: int, done: Callable[[Page], None]) -> None: ...


# -- daemons ----------------------------------------------------------------------------------

_OUTCOME_PB = {"ok": 1, "denied": 2, "failed": 3}
_OUTCOME_NAME = {1: "ok", 2: "denied", 3: "failed"}


def row_from_pb(source: str, r: Any) -> AuditRow:
    return AuditRow(source, r.node, r.seq, r.time_unix_us, r.actor, r.role, r.client, r.action,
                    r.target, r.params_json, _OUTCOME_NAME.get(r.outcome, ""), r.error, r.hash)


async def query_page(channel: Any, metadata: tuple, source: str, spec: AuditFilterSpec,
                     cursor: int, limit: int, timeout: float = 30.0) -> Page:
    """One Audit.Query page from a daemon, newest first (errors as a Page with `error`)."""
    import grpc

    from musaops.v1 import audit_pb2, audit_pb2_grpc

    q = audit_pb2.AuditQuery(
        since_unix_ms=spec.since_us // 1000, until_unix_ms=-(-spec.until_us // 1000) if spec.until_us else 0,
        actor=spec.actor, action=spec.action, outcome=_OUTCOME_PB.get(spec.outcome, 0),
        after_seq=cursor, limit=limit, descending=True)
    rows, received = [], 0
    try:
        async for r in audit_pb2_grpc.AuditStub(channel).Query(q, metadata=metadata, timeout=timeout):
            received += 1
            cursor = r.seq
            row = row_from_pb(source, r)
            if spec.since_us <= row.time_us and (not spec.until_us or row.time_us < spec.until_us):
                rows.append(row)   # the query is in ms; the view's range may be finer
    except grpc.RpcError as exc:
        return Page(source, tuple(rows), True, f"{exc.code().name}: {exc.details()}")   # type: ignore[attr-defined]
    return Page(source, tuple(rows), received < limit or cursor <= 1, cursor=cursor)


async def verify_node(channel: Any, metadata: tuple, source: str, timeout: float = 120.0) -> VerifyOutcome:
    import grpc

    from musaops.v1 import audit_pb2, audit_pb2_grpc

    try:
        r = await audit_pb2_grpc.AuditStub(channel).Verify(audit_pb2.VerifyRequest(), metadata=metadata,
                                                           timeout=timeout)
    except grpc.RpcError as exc:
        return VerifyOutcome(source, False, 0, "", error=f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
    return VerifyOutcome(source, r.ok, r.records, r.head_hash, r.first_broken_seq, r.reason)


class AuditClient:
    """Audit calls to daemons through the NodeHub. The answers come back through the hub's
    listener (`on_audit_page`, `on_audit_verified`, on the GUI thread via the bridge): feed
    them to `deliver`, which hands each to the `done` of the call it answers."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self._lock = threading.Lock()
        self._pending: dict[str, Callable[[Any], None]] = {}

    def _register(self, kind: str, done: Callable[[Any], None]) -> str:
        op_id = self.hub.new_id(f"audit-{kind}")
        with self._lock:   # before the call: a page may come back before it returns
            self._pending[op_id] = done
        return op_id

    def deliver(self, op_id: str, answer: Any) -> bool:
        """An answer from the hub's listener; True when it was one of ours."""
        with self._lock:
            done = self._pending.pop(op_id, None)
        if done is not None:
            done(answer)
        return done is not None

    def fetcher(self, node_id: str) -> "NodeFetcher":
        return NodeFetcher(self, node_id)

    def query(self, node_id: str, spec: AuditFilterSpec, cursor: int, limit: int,
              done: Callable[[Page], None]) -> str:
        return self.hub.audit_query(node_id, spec, cursor, limit, op_id=self._register("query", done))

    def verify(self, node_id: str, done: Callable[[VerifyOutcome], None]) -> str:
        return self.hub.audit_verify(node_id, op_id=self._register("verify", done))


class NodeFetcher:
    """Pages of one daemon's log through the NodeHub."""

    def __init__(self, client: AuditClient, node_id: str) -> None:
        self.client, self.node_id = client, node_id

    def fetch(self, spec: AuditFilterSpec, cursor: int, limit: int, done: Callable[[Page], None]) -> None:
        self.client.query(self.node_id, spec, cursor, limit, done)


# -- the console's operator log ----------------------------------------------------------------

def console_actor() -> str:
    try:
        return f"console:{getpass.getuser()}"
    except Exception:
        return "console"


def row_from_log(log_id: int, entry: Any, actor: str) -> AuditRow:
    outcome = entry.outcome if entry.outcome in OUTCOMES else "failed"
    target, message = parse_detail(entry.detail)
    params = entry.detail if entry.detail.startswith("{") else json.dumps({"detail": entry.detail})
    return AuditRow(CONSOLE_SOURCE, entry.node or "this console", log_id, int(entry.time * 1_000_000), actor,
                    "", "console", entry.action, target, params, outcome,
                    "" if outcome == "ok" else message, "")


class ConsoleLogFetcher:
    """Pages of the operator log through the StoreWorker (never on the GUI thread)."""

    def __init__(self, store_worker: Any) -> None:
        self.store = store_worker
        self.actor = console_actor()

    def fetch(self, spec: AuditFilterSpec, cursor: int, limit: int, done: Callable[[Page], None]) -> None:
        if spec.actor and spec.actor != self.actor:
            done(Page(CONSOLE_SOURCE, (), True))
            return

        def back(result: Any, error: str) -> None:
            if error:
                done(Page(CONSOLE_SOURCE, (), True, error))
                return
            rows = tuple(row_from_log(i, e, self.actor) for i, e in result)
            done(Page(CONSOLE_SOURCE, rows, len(rows) < limit))

        submitted = self.store.submit("query_log", spec.since_us / 1e6, spec.until_us / 1e6, spec.action,
                                      spec.outcome, cursor, limit, done=back)
        if submitted is None:
            done(Page(CONSOLE_SOURCE, (), True, "the console store is closed"))


# -- merging ---------------------------------------------------------------------------------

@dataclass
class _SourceState:
    buffer: collections.deque = field(default_factory=collections.deque)
    cursor: int = 0
    done: bool = False
    pending: bool = False
    error: str = ""
    # Set for a source that joined after rows were released: its rows that sort before this
    # key belong among those rows (`take_late`), not in the stream still to come.
    boundary: tuple[int, str, int] | None = None


def merge_key(row: AuditRow) -> tuple[int, str, int]:
    """The merge order, newest first: time, then source, then seq."""
    return (row.time_us, row.source, row.seq)


class AuditMerger:
    """K-way merge of newest-first pages into one newest-first stream."""

    def __init__(self, sources: list[str] | tuple[str, ...]) -> None:
        self.state = {s: _SourceState() for s in sources}
        self._late: list[AuditRow] = []

    def add_source(self, source: str, released: AuditRow | None = None) -> None:
        """A source joins the merge; `released` is the last row already taken, if any.

        The source's rows newer than `released` come back from `take_late` (the caller slots
        them in among what it holds), the rest join the stream, so the sources already in
        the merge are not asked again."""
        if source not in self.state:
            self.state[source] = _SourceState(boundary=merge_key(released) if released else None)

    def catching_up(self) -> bool:
        return any(st.boundary is not None for st in self.state.values())

    def wanted(self, late_only: bool = False) -> list[tuple[str, int]]:
        """Sources that must deliver a page before more rows can be released; marks them pending.

        late_only: only sources still fetching rows newer than what was released."""
        out = []
        for s, st in self.state.items():
            if late_only and st.boundary is None:
                continue
            if not st.buffer and not st.done and not st.pending:
                st.pending = True
                out.append((s, st.cursor))
        return out

    def add(self, page: Page) -> None:
        st = self.state.get(page.source)
        if st is None:
            return
        st.pending = False
        rows = page.rows
        if st.boundary is not None:
            n = 0
            while n < len(rows) and merge_key(rows[n]) > st.boundary:
                n += 1
            self._late.extend(rows[:n])
            rows = rows[n:]
            if rows or page.exhausted or page.error:
                st.boundary = None
        st.buffer.extend(rows)
        if page.cursor or page.rows:
            st.cursor = page.cursor or page.rows[-1].seq
        if page.error:
            st.error = page.error
        if page.exhausted or page.error:
            st.done = True

    def take(self, limit: int) -> list[AuditRow]:
        """Up to `limit` rows that are certainly next in newest-first order."""
        out: list[AuditRow] = []
        while len(out) < limit:
            heads = []
            for st in self.state.values():
                if st.buffer:
                    heads.append(st)
                elif not st.done:
                    return out            # this source may still hold a newer row
            if not heads:
                return out
            best = max(heads, key=lambda st: merge_key(st.buffer[0]))
            out.append(best.buffer.popleft())
        return out

    def take_late(self) -> list[AuditRow]:
        """Rows of a joining source that sort among the rows already released."""
        out, self._late = self._late, []
        return out

    @property
    def exhausted(self) -> bool:
        return all(st.done and not st.buffer for st in self.state.values())

    @property
    def waiting(self) -> bool:
        return any(st.pending for st in self.state.values())

    def errors(self) -> dict[str, str]:
        return {s: st.error for s, st in self.state.items() if st.error}
