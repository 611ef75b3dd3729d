"""Who is calling: the Caller type, the roles it may hold, and the current caller.

The auth interceptor (trust/auth.py) binds the caller of each RPC with
`set_current_caller`; handlers and the audit log read it with `current_caller()`.
"""

from __future__ import annotations

import contextvars
import getpass
from dataclasses import dataclass

ROLES = ("viewer", "client", "operator", "auditor", "admin")


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
    try:
        _current.reset(token)
    except ValueError:  # a stream closed from another context: nothing left to undo there
        pass


def local_caller() -> Caller:
    """The operator at this machine's shell (CLI commands act as admin: they hold the DB)."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers)
        user = "unknown"
    return Caller(actor=f"local:{user}", role="admin", client="local")
