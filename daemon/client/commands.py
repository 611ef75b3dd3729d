"""What every shell subcommand of musad shares (client_cli.py's and client_models.py's):
the common options and the dial-and-report wrapper (`add_common_args`), one-sentence failures
(`fail`), and following a progress stream with Ctrl-C cancelling it (`follow_progress`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .connection import ClientError, add_connection_args


def fail(message: str, code: int) -> int:
    """Prints "musad: " + `message` on stderr; returns `code` (the exit status)."""
    print(f"musad: {message}", file=sys.stderr)
    return code


def _run(func: Callable[[argparse.Namespace, Any], int]) -> Callable[[argparse.Namespace], int]:
    """Wraps a command: dials the node, turns ClientError into one sentence and an exit code."""

    def command(args: argparse.Namespace) -> int:
        from .connection import Client, target_from_args

        try:
            with Client(target_from_args(args)) as client:
                return func(args, client)
        except ClientError as exc:
            return fail(exc.message, exc.code)

    return command


def add_common_args(p: argparse.ArgumentParser, func: Callable[[argparse.Namespace, Any], int], *,
                    json_help: str | None = "print the answer as JSON") -> None:
    """What every shell command ends with: --json (unless `json_help` is None), the
    connection options, and `func` as what it runs (through `_run`)."""
    if json_help is not None:
        p.add_argument("--json", action="store_true", help=json_help)
    add_connection_args(p)
    p.set_defaults(func=_run(func))


def follow_progress(call: Any, client: Any, progress: Any, show: Callable[[Any], Any], cancelled: str) -> Any:
    """Passes each message of the progress stream `call` to `show` until it returns true or the
    stream ends; returns the last message (None when there was none). The node's error is a
    ClientError; Ctrl-C cancels the call: exit 130 with "interrupted; " + `cancelled`."""
    import grpc

    last = None
    try:
        for msg in call:
            last = msg
            if show(msg):
                break
    except grpc.RpcError as exc:
        progress.end()
        raise client.error(exc) from None
    except KeyboardInterrupt:
        call.cancel()
        progress.end()
        raise ClientError(f"interrupted; {cancelled}", 130) from None
    return last
