"""Who is calling: callers, roles, the token store and the gRPC auth interceptor.

Every RPC but health and reflection passes the interceptor, which resolves the caller
(token name or client-certificate CN, role, peer address), checks the role against the
method, audits refusals, and makes the caller available to the handler through
`current_caller()` (a contextvar set inside the wrapped handler).
"""

from __future__ import annotations

import contextvars
import getpass
from dataclasses import dataclass

ROLES = ("viewer", "operator", "auditor", "admin")


@dataclass(frozen=True)
class Caller:
    """The resolved identity behind one call."""

    actor: str          # token name, client-certificate CN, "anonymous" or "local:<user>"
    role: str           # one of ROLES, or "" when auth is off
    client: str         # peer address, e.g. "ipv4:127.0.0.1:50312"; "local" for the CLI


ANONYMOUS = Caller(actor="anonymous", role="", client="")

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("musad_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the RPC being handled (anonymous outside an RPC or when auth is off)."""
    return _current.get()


def set_current_caller(caller: Caller) -> contextvars.Token:
    """Binds `caller` for the running task; returns the token for `reset_current_caller`."""
    return _current.set(caller)


def reset_current_caller(token: contextvars.Token) -> None:
    _current.reset(token)


def local_caller() -> Caller:
    """The operator at this machine's shell (CLI commands act as admin: they hold the DB)."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers)
        user = "unknown"
    return Caller(actor=f"local:{user}", role="admin", client="local")
