"""The error a daemon part raises for a request it refuses: a status and one sentence.

Parts below the services (deployments, the dtype rule) know nothing of gRPC: they name the
status with `Status`, whose members are spelled like gRPC's status codes, and
`daemon/services/status.py` turns them into `grpc.StatusCode`s (another transport, e.g. an
HTTP front door, maps the same names to its own codes).
"""

from __future__ import annotations

import enum

_SHOWN_CHARS = 64   # user input echoed in a status message is cut to this


class Status(enum.Enum):
    """Why a request was refused (names as in gRPC's status codes)."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    ABORTED = "aborted"            # e.g. another transfer of the same model is running
    DATA_LOSS = "data_loss"        # e.g. a transferred file does not match its digest


class RequestError(Exception):
    """A request the daemon refuses: a Status and a sentence."""

    def __init__(self, code: Status, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def shown(text: str) -> str:
    """`text` quoted for a status message, cut short: a huge echoed name would overflow the
    gRPC trailer limit (16 KiB) and reach the client as a different error."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"


def no_model(name: str) -> RequestError:
    """An inference caller asked for a model the node has not (or the caller may not use):
    both read the same, and name none of the node's folders."""
    return RequestError(Status.NOT_FOUND, f"There is no model named {shown(name)} on this node.")
