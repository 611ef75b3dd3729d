"""Keys (admin): create, list, change limits, revoke API keys over gRPC; KeyUsage.Query:
hourly usage buckets per key x model, paged. Wire <-> domain conversion for both.

Token store calls block on the database and the audit log, so they run in a worker
thread; each is audited by the store with the calling admin as the actor.
"""

from __future__ import annotations

import asyncio

import grpc

from musaops.v1 import keys_pb2, keys_pb2_grpc

from ..limits import KeyLimits
from ..trust.caller import current_caller
from ..trust.tokens import TokenError, TokenInfo
from ..usage import UsageFilter, last_used

MAX_PAGE = 10000


def limits_from_pb(pb: keys_pb2.KeyLimits) -> KeyLimits:
    return KeyLimits(models=tuple(pb.models), rpm=pb.rpm, tpm=pb.tpm, concurrent=pb.concurrent,
                     daily_tokens=pb.daily_tokens)


def limits_pb(limits: KeyLimits) -> keys_pb2.KeyLimits:
    return keys_pb2.KeyLimits(models=list(limits.models), rpm=limits.rpm, tpm=limits.tpm,
                              concurrent=limits.concurrent, daily_tokens=limits.daily_tokens)


def key_pb(info: TokenInfo, now_us: int, used_us: int = 0) -> keys_pb2.KeyInfo:
    return keys_pb2.KeyInfo(
        name=info.name, role=info.role, created_unix_ms=info.created_us // 1000,
        expires_unix_ms=(info.expires_us or 0) // 1000, revoked_unix_ms=(info.revoked_us or 0) // 1000,
        state=info.state(now_us), limits=limits_pb(info.limits), last_used_unix_ms=used_us // 1000)


def _now_us() -> int:
    import time

    return time.time_ns() // 1000


class KeysServicer(keys_pb2_grpc.KeysServicer):
    def __init__(self, ctx) -> None:  # noqa: ANN001 (DaemonContext)
        self.ctx = ctx

    async def _store(self, context: grpc.aio.ServicerContext):  # noqa: ANN202
        if self.ctx.auth is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "This node has no token store.")
        return self.ctx.auth

    async def Create(self, request, context):  # noqa: ANN001, N802
        store = await self._store(context)
        caller = current_caller()
        try:
            secret = await asyncio.to_thread(
                store.create, request.name, request.role, request.expires_days or None, caller,
                limits_from_pb(request.limits))
        except TokenError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        info = next(t for t in await asyncio.to_thread(store.list) if t.name == request.name)
        return keys_pb2.CreateKeyResponse(key=key_pb(info, _now_us()), secret=secret)

    async def List(self, request, context):  # noqa: ANN001, N802
        store = await self._store(context)
        infos = await asyncio.to_thread(store.list)
        used = await asyncio.to_thread(last_used, self.ctx.usage) if self.ctx.usage is not None else {}
        now = _now_us()
        return keys_pb2.ListKeysResponse(keys=[key_pb(t, now, used.get(t.name, 0)) for t in infos])

    async def SetLimits(self, request, context):  # noqa: ANN001, N802
        store = await self._store(context)
        try:
            info = await asyncio.to_thread(store.set_limits, request.name, limits_from_pb(request.limits),
                                           current_caller())
        except TokenError as exc:
            code = grpc.StatusCode.NOT_FOUND if "no active token" in str(exc) else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, str(exc))
        return key_pb(info, _now_us())

    async def Revoke(self, request, context):  # noqa: ANN001, N802
        store = await self._store(context)
        try:
            await asyncio.to_thread(store.revoke, request.name, current_caller())
        except TokenError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return keys_pb2.RevokeKeyResponse()


def _page_token(hour_s: int, key: str, model: str) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps([hour_s, key, model]).encode()).decode()


def _parse_page_token(token: str) -> tuple[int, str, str]:
    import base64
    import json

    h, k, m = json.loads(base64.urlsafe_b64decode(token.encode()))
    return int(h), str(k), str(m)


class KeyUsageServicer(keys_pb2_grpc.KeyUsageServicer):
    def __init__(self, ctx) -> None:  # noqa: ANN001
        self.ctx = ctx

    async def Query(self, request, context):  # noqa: ANN001, N802
        if request.since_unix_ms < 0 or request.until_unix_ms < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "since and until must not be negative.")
        after = None
        if request.page_token:
            try:
                after = _parse_page_token(request.page_token)
            except Exception:  # noqa: BLE001
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "page_token is not one this node gave out; start again without it.")
        limit = min(request.limit or 1000, MAX_PAGE)
        f = UsageFilter(key=request.key, model=request.model, since_s=request.since_unix_ms // 1000,
                        until_s=-(-request.until_unix_ms // 1000) if request.until_unix_ms else 0)
        rows = await asyncio.to_thread(self.ctx.usage.query, f, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        out = keys_pb2.UsageQueryResponse(buckets=[keys_pb2.UsageBucket(
            hour_unix_ms=b.hour_s * 1000, key=b.key, model=b.model, requests=b.requests,
            prompt_tokens=b.prompt_tokens, completion_tokens=b.completion_tokens, errors=b.errors,
            rate_limited=b.rate_limited) for b in rows])
        if more:
            last = rows[-1]
            out.next_page_token = _page_token(last.hour_s, last.key, last.model)
        return out
