"""Bearer tokens: created once, stored only as a SHA-256 hash, with a role and an expiry.

A token is 256 bits from `secrets`, so an unsalted SHA-256 is a safe verifier; lookups go
by hash and the match is confirmed with a constant-time compare. Every create and revoke
is audited before it is reported. A token's name is also the identity a client
certificate with that CN gets (mTLS callers take the role of the token named like them).
"""

from __future__ import annotations

import hashlib
import json
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..limits import LIMIT_FIELDS, NO_LIMITS, KeyLimits
from .caller import ROLES, Caller, local_caller


class Recorder(Protocol):
    """What the store records its changes with: an AuditLog (trust/audit.py), which is
    not imported here so that the token store stays below the audit log."""

    def record_sync(self, action: str, target: str = "", params: dict[str, Any] | None = None,
                    outcome: Any = "ok", error: str = "", caller: Caller | None = None) -> Any: ...


TOKEN_PREFIX = "musa_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")
CACHE_SECONDS = 1.0       # how stale the in-memory view may be (revocations from the CLI)

_meta = sa.MetaData()
auth_tokens = sa.Table(
    "auth_tokens", _meta,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16)),
    sa.Column("token_sha256", sa.String(64)),
    sa.Column("created_us", sa.BigInteger),
    sa.Column("expires_us", sa.BigInteger, nullable=True),
    sa.Column("revoked_us", sa.BigInteger, nullable=True),
    sa.Column("limits_json", sa.Text, nullable=True),     # limits.KeyLimits as JSON; NULL = none
)


class TokenError(ValueError):
    """A token request that cannot be done; the message says why."""


@dataclass(frozen=True)
class TokenInfo:
    name: str
    role: str
    created_us: int
    expires_us: int | None
    revoked_us: int | None
    limits: KeyLimits = NO_LIMITS

    def usable(self, now_us: int) -> bool:
        return self.revoked_us is None and (self.expires_us is None or now_us < self.expires_us)

    def state(self, now_us: int) -> str:
        if self.revoked_us is not None:
            return "revoked"
        if self.expires_us is not None and now_us >= self.expires_us:
            return "expired"
        return "active"


def limits_json(limits: KeyLimits) -> str | None:
    return None if limits == NO_LIMITS else json.dumps(limits.as_dict(), sort_keys=True, separators=(",", ":"))


def parse_limits(text: str | None) -> KeyLimits:
    if not text:
        return NO_LIMITS
    d = json.loads(text)
    return KeyLimits(models=tuple(d.get("models", ())), **{f: int(d.get(f, 0)) for f in LIMIT_FIELDS})


def _check_limits(limits: KeyLimits) -> None:
    try:
        limits.check()
    except ValueError as exc:
        raise TokenError(str(exc)) from None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now_us() -> int:
    return time.time_ns() // 1000


class TokenStore:
    """Tokens in the daemon database (table auth_tokens, created by the migrations)."""

    def __init__(self, engine: Engine, audit: Recorder | None = None) -> None:
        self.engine = engine
        self.audit = audit
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, TokenInfo]] = {}   # sha256 -> (sha256, info)
        self._by_name: dict[str, TokenInfo] = {}
        self._loaded_at = 0.0

    # -- changes (audited) ----------------------------------------------------------------

    def create(self, name: str, role: str, expires_days: float | None = None,
               caller: Caller | None = None, limits: KeyLimits = NO_LIMITS) -> str:
        """Creates token `name` with `limits`; returns the token text (shown once, never
        stored). A refused create is audited as failed too."""
        try:
            return self._create(name, role, expires_days, caller, limits)
        except TokenError as exc:
            self._audit("token.create", str(name)[:128], {"name": str(name)[:128], "role": str(role)[:16]},
                        caller, "failed", str(exc))
            raise

    def _create(self, name: str, role: str, expires_days: float | None,
                caller: Caller | None, limits: KeyLimits = NO_LIMITS) -> str:
        if not NAME_RE.match(name or ""):
            raise TokenError(f"token name {name!r} is not valid: use 1-128 letters, digits and ._@:-")
        if role not in ROLES:
            raise TokenError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if expires_days is not None and expires_days <= 0:
            raise TokenError(f"--expires must be a positive number of days, got {expires_days}")
        _check_limits(limits)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = _now_us()
        expires = None if expires_days is None else now + int(expires_days * 86400e6)
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            row = conn.execute(sa.select(auth_tokens.c.revoked_us)
                               .where(auth_tokens.c.name == name)).first()
            if row is not None and row.revoked_us is None:
                raise TokenError(f"a token named {name!r} exists; revoke it first")
            if row is not None:
                conn.execute(auth_tokens.delete().where(auth_tokens.c.name == name))
            conn.execute(auth_tokens.insert().values(
                name=name, role=role, token_sha256=hash_token(token), created_us=now,
                expires_us=expires, revoked_us=None, limits_json=limits_json(limits)))
        params = {"name": name, "role": role, "expires_us": expires}
        if limits != NO_LIMITS:
            params["limits"] = limits.as_dict()
        self._audit("token.create", name, params, caller)
        self._loaded_at = 0.0
        return token

    def revoke(self, name: str, caller: Caller | None = None) -> None:
        """Revokes token `name` at once (the daemon sees it within CACHE_SECONDS)."""
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            n = conn.execute(auth_tokens.update()
                             .where(auth_tokens.c.name == name, auth_tokens.c.revoked_us.is_(None))
                             .values(revoked_us=_now_us())).rowcount
        if not n:
            self._audit("token.revoke", name, {"name": name}, caller, "failed", "no active token by that name")
            raise TokenError(f"no active token named {name!r}")
        self._audit("token.revoke", name, {"name": name}, caller)
        self._loaded_at = 0.0

    def set_limits(self, name: str, limits: KeyLimits, caller: Caller | None = None) -> TokenInfo:
        """Replaces the limits of active token `name` (in force within CACHE_SECONDS, no
        restart); audited either way."""
        params = {"name": name, "limits": limits.as_dict()}
        try:
            _check_limits(limits)
            with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
                n = conn.execute(auth_tokens.update()
                                 .where(auth_tokens.c.name == name, auth_tokens.c.revoked_us.is_(None))
                                 .values(limits_json=limits_json(limits))).rowcount
            if not n:
                raise TokenError(f"no active token named {name!r}")
        except TokenError as exc:
            self._audit("token.limits", name, params, caller, "failed", str(exc))
            raise
        self._audit("token.limits", name, params, caller)
        self._loaded_at = 0.0
        return next(t for t in self.list() if t.name == name)

    def _audit(self, action: str, target: str, params: dict, caller: Caller | None,
               outcome: str = "ok", error: str = "") -> None:
        if self.audit is not None:
            self.audit.record_sync(action, target, params, outcome, error,
                                   caller=caller or local_caller())

    # -- reads ---------------------------------------------------------------------------

    def list(self) -> list[TokenInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(auth_tokens.c.name, auth_tokens.c.role,
                                          auth_tokens.c.created_us, auth_tokens.c.expires_us,
                                          auth_tokens.c.revoked_us, auth_tokens.c.limits_json)
                                .order_by(auth_tokens.c.name))
            return [TokenInfo(*r[:5], parse_limits(r[5])) for r in rows]

    def refresh(self) -> None:
        """Reloads the token table (the interceptor calls it off the event loop)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(auth_tokens)).all()
        cache, by_name = {}, {}
        for r in rows:
            info = TokenInfo(r.name, r.role, r.created_us, r.expires_us, r.revoked_us, parse_limits(r.limits_json))
            cache[r.token_sha256] = (r.token_sha256, info)
            by_name[r.name] = info
        with self._lock:
            self._cache, self._by_name = cache, by_name
            self._loaded_at = time.monotonic()

    def needs_refresh(self) -> bool:
        return time.monotonic() - self._loaded_at > CACHE_SECONDS

    def authenticate(self, token: str, refresh: bool = True) -> TokenInfo | None:
        """The usable token matching `token`, else None (unknown, revoked or expired)."""
        if refresh and self.needs_refresh():
            self.refresh()
        digest = hash_token(token)
        hit = self._cache.get(digest)
        if hit is None or not hmac.compare_digest(hit[0], digest):
            return None
        return hit[1] if hit[1].usable(_now_us()) else None

    def identity(self, name: str, refresh: bool = True) -> TokenInfo | None:
        """The usable entry named `name` (the role of a client certificate with that CN)."""
        if refresh and self.needs_refresh():
            self.refresh()
        info = self._by_name.get(name)
        return info if info is not None and info.usable(_now_us()) else None

    def describe(self, token: str) -> str:
        """Why `token` is refused, as a sentence."""
        info = self._cache.get(hash_token(token))
        if info is None:
            return "the bearer token is not known to this node"
        return f"the bearer token {info[1].name!r} is {info[1].state(_now_us())}"
