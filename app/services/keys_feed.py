"""The console side of the Keys and KeyUsage services: what the hub's `keys_call` command
sends, and the wire conversion of the answers into app/core/usage.py's dataclasses.

One request kind per call: list, create, limits (SetLimits), revoke, usage (every page of
KeyUsage.Query for a time range). The hub runs `call` on its loop and hands the KeysAnswer
to the listener's `on_keys_answer(op_id, answer)`; a failure is an answer with `error`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.usage import KeyEntry, KeyLimits, UsageBucket

MAX_BUCKETS = 100_000    # a usage answer stops here (a year of 10 keys x 1 model is 87,600)
PAGE = 5000


@dataclass(frozen=True)
class KeysRequest:
    kind: str                          # list | create | limits | revoke | usage
    name: str = ""
    role: str = ""
    expires_days: float = 0.0
    limits: KeyLimits = field(default_factory=KeyLimits)
    since_ms: int = 0                  # usage: [since, until), 0 = open
    until_ms: int = 0


@dataclass(frozen=True)
class KeysAnswer:
    node_id: str
    request: KeysRequest
    keys: tuple[KeyEntry, ...] = ()    # list
    key: KeyEntry | None = None        # create, limits
    secret: str = ""                   # create: shown once
    buckets: tuple[UsageBucket, ...] = ()   # usage
    truncated: bool = False            # usage stopped at MAX_BUCKETS
    error: str = ""


def limits_pb(limits: KeyLimits) -> Any:
    from musaops.v1 import keys_pb2

    return keys_pb2.KeyLimits(models=list(limits.models), rpm=limits.rpm, tpm=limits.tpm,
                              concurrent=limits.concurrent, daily_tokens=limits.daily_tokens)


def key_entry(node_id: str, k: Any) -> KeyEntry:
    lim = k.limits
    return KeyEntry(node_id, k.name, k.role, k.state, k.created_unix_ms, k.expires_unix_ms,
                    k.last_used_unix_ms, KeyLimits(tuple(lim.models), lim.rpm, lim.tpm, lim.concurrent,
                                                   lim.daily_tokens))


async def call(channel: Any, metadata: tuple, node_id: str, req: KeysRequest,
               timeout: float = 30.0) -> KeysAnswer:
    """Carries `req` out on one node (grpc errors propagate; the hub words them)."""
    from musaops.v1 import keys_pb2, keys_pb2_grpc

    keys = keys_pb2_grpc.KeysStub(channel)
    kw = {"metadata": metadata, "timeout": timeout}
    if req.kind == "list":
        r = await keys.List(keys_pb2.ListKeysRequest(), **kw)
        return KeysAnswer(node_id, req, keys=tuple(key_entry(node_id, k) for k in r.keys))
    if req.kind == "create":
        r = await keys.Create(keys_pb2.CreateKeyRequest(name=req.name, role=req.role, expires_days=req.expires_days,
                                                        limits=limits_pb(req.limits)), **kw)
        return KeysAnswer(node_id, req, key=key_entry(node_id, r.key), secret=r.secret)
    if req.kind == "limits":
        r = await keys.SetLimits(keys_pb2.SetKeyLimitsRequest(name=req.name, limits=limits_pb(req.limits)), **kw)
        return KeysAnswer(node_id, req, key=key_entry(node_id, r))
    if req.kind == "revoke":
        await keys.Revoke(keys_pb2.RevokeKeyRequest(name=req.name), **kw)
        return KeysAnswer(node_id, req)
    if req.kind == "usage":
        usage = keys_pb2_grpc.KeyUsageStub(channel)
        out: list[UsageBucket] = []
        token = ""
        while True:
            r = await usage.Query(keys_pb2.UsageQuery(since_unix_ms=req.since_ms, until_unix_ms=req.until_ms,
                                                      page_token=token, limit=PAGE), **kw)
            out += [UsageBucket(node_id, b.hour_unix_ms, b.key, b.model, b.requests, b.prompt_tokens,
                                b.completion_tokens, b.errors, b.rate_limited) for b in r.buckets]
            token = r.next_page_token
            if not token or len(out) >= MAX_BUCKETS:
                return KeysAnswer(node_id, req, buckets=tuple(out), truncated=bool(token))
    raise ValueError(f"unknown keys request {req.kind!r}")
