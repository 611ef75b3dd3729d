"""The Audit gRPC service: Query (paged, filtered, streamed) and Verify over the node's log.

Database reads run in a worker thread so a large page never stalls the event loop.
"""

from __future__ import annotations

import asyncio

import grpc

from musaops.v1 import audit_pb2, audit_pb2_grpc

from ..trust.audit import AuditEntry, AuditFilter, AuditLog

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
_OUTCOME_TO_PB = {"ok": audit_pb2.OUTCOME_OK, "denied": audit_pb2.OUTCOME_DENIED,
                  "failed": audit_pb2.OUTCOME_FAILED}
_OUTCOME_FROM_PB = {v: k for k, v in _OUTCOME_TO_PB.items()}
MAX_INT64 = 2**63 - 1


def entry_to_proto(e: AuditEntry) -> audit_pb2.AuditRecord:
    return audit_pb2.AuditRecord(
        seq=e.seq, time_unix_us=e.time_us, actor=e.actor, role=e.role, client=e.client,
        action=e.action, target=e.target, params_json=e.params_json,
        outcome=_OUTCOME_TO_PB.get(e.outcome, audit_pb2.OUTCOME_UNSPECIFIED), error=e.error,
        prev_hash=e.prev_hash, hash=e.hash, node=e.node)


def filter_from_proto(q: audit_pb2.AuditQuery) -> AuditFilter:
    """Checks the query; raises ValueError with a sentence when it makes no sense."""
    if q.since_unix_ms < 0 or q.until_unix_ms < 0:
        raise ValueError("since_unix_ms and until_unix_ms must not be negative")
    if q.until_unix_ms and q.since_unix_ms and q.until_unix_ms <= q.since_unix_ms:
        raise ValueError("until_unix_ms must be later than since_unix_ms")
    if q.since_unix_ms > MAX_INT64 // 1000 or q.until_unix_ms > MAX_INT64 // 1000:
        raise ValueError("the time range is beyond the year 292277")
    if q.outcome not in _OUTCOME_FROM_PB and q.outcome != audit_pb2.OUTCOME_UNSPECIFIED:
        raise ValueError(f"outcome {q.outcome} is not a known Outcome")
    if q.after_seq > MAX_INT64:
        raise ValueError("after_seq is too large")
    return AuditFilter(since_us=q.since_unix_ms * 1000, until_us=q.until_unix_ms * 1000,
                       actor=q.actor, action=q.action,
                       outcome=_OUTCOME_FROM_PB.get(q.outcome, ""))


async def _write(context: grpc.aio.ServicerContext, message) -> bool:  # noqa: ANN001
    """Sends one message; False when the call is already over. A client whose deadline
    passed (or that cancelled) while a page was being read used to reach grpc's write after
    core had ended the call but before grpc.aio noticed: grpc logged an ExecuteBatchError
    traceback per such call. Writing ourselves, that ending is the quiet end it is."""
    if context.done() or (context.time_remaining() or 1.0) <= 0:
        return False
    try:
        await context.write(message)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - grpc's ExecuteBatchError / AbortError: the call ended
        return False
    return True


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, log: AuditLog | None) -> None:
        self.log = log

    async def _require_log(self, context: grpc.aio.ServicerContext) -> AuditLog:
        if self.log is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this node runs without an audit log")
        return self.log  # type: ignore[return-value]

    async def Query(self, request: audit_pb2.AuditQuery, context: grpc.aio.ServicerContext):
        await self._require_log(context)
        try:
            f = filter_from_proto(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        after, left = request.after_seq, limit
        while left > 0:   # stream in pages so a 10,000-record answer is not held at once
            page = min(left, 500)
            try:
                rows = await asyncio.to_thread(self.log.query, f, after, page, request.descending)
            except Exception as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"the audit store cannot be read: {exc}")
            for e in rows:
                if not await _write(context, entry_to_proto(e)):
                    return
            if len(rows) < page:
                return
            after, left = rows[-1].seq, left - len(rows)

    async def Verify(self, request: audit_pb2.VerifyRequest, context: grpc.aio.ServicerContext):
        await self._require_log(context)
        try:
            r = await asyncio.to_thread(self.log.verify)
        except Exception as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the audit store cannot be read: {exc}")
        return audit_pb2.VerifyResponse(ok=r.ok, records=r.records, head_hash=r.head_hash,
                                        first_broken_seq=r.first_broken_seq, reason=r.reason)


def add_audit_service(server: grpc.aio.Server, log: AuditLog) -> AuditServicer:
    servicer = AuditServicer(log)
    audit_pb2_grpc.add_AuditServicer_to_server(servicer, server)
    return servicer


def register(server: grpc.aio.Server, ctx) -> None:  # noqa: ANN001 (DaemonContext)
    """server.py's hook: the Audit service over ctx.audit."""
    audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(ctx.audit), server)
