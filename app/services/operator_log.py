"""The operator log: this console's own record of what its operator did, kept in the store.

Qt-free. Written by the code that performs each operation: the NodeHub when a deploy,
undeploy or Generate ends (`record_result`, from the hub thread), the main window when it
saves or removes a connection (`record`). Writes go through the StoreWorker, so nothing
here waits on the database. The Audit view reads the log back (`audit_feed.row_from_log`)
and merges it with the daemons' audit logs; `log_detail` / `parse_detail` are the one
definition of the detail text between the two.
"""

from __future__ import annotations

import json
from typing import Any

from ..core.operations import DeployEvent, GenerationDone, UndeployResult


def log_detail(target: str, message: str = "", **params: Any) -> str:
    """The detail text of a console action (what `parse_detail` reads back)."""
    return json.dumps({"target": target, "message": message, **params}, sort_keys=True)


def parse_detail(detail: str) -> tuple[str, str]:
    """(target, message) of a detail text; a plain-text detail is all message."""
    if detail.startswith("{"):
        try:
            d = json.loads(detail)
            return str(d.get("target", "")), str(d.get("message", ""))
        except ValueError:
            pass
    return "", detail


class OperatorLog:
    """Appends to the store's operator log through its worker thread (`submit("log", ...)`)."""

    def __init__(self, store_worker: Any) -> None:
        self.store = store_worker

    def record(self, action: str, node: str = "", detail: str = "", ok: bool = True) -> None:
        self.store.submit("log", action, node, detail, "ok" if ok else "failed")

    def record_result(self, result: DeployEvent | UndeployResult | GenerationDone, node: str) -> None:
        """The last word of a hub command (`node` is its label); other events are not logged."""
        if isinstance(result, DeployEvent):
            if result.done:
                self.record("node.Deploy", node, log_detail(result.model, result.message,
                                                            stage=result.stage), result.ok)
        elif isinstance(result, UndeployResult):
            self.record("node.Undeploy", node, log_detail(result.model, result.message), result.ok)
        elif isinstance(result, GenerationDone):
            self.record("inference.Generate", node,
                        log_detail("", result.error, finish_reason=result.finish_reason,
                                   completion_tokens=result.usage.completion_tokens),
                        result.finish_reason != "error")
