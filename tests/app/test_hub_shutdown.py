"""NodeHub.stop() closes its loop only once gRPC has nothing left to deliver to it.

gRPC's asyncio stack has one completion-queue poller per process; it hands each completion to
the loop that made the call. A hub that closed its loop while cancelled calls still owed
completions made that hand-over raise "RuntimeError: Event loop is closed" in whichever loop
ran the poller (here an in-process daemon's, in a console process a later hub's). Real daemons
on port 0; the hub is stopped while busy the way the console is at exit.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading

import pytest

from musaops.app.core import ConnectionState, DeploySpec, GenerateSpec, NodeAddress, Sampling
from musaops.app.services.audit_feed import AuditFilterSpec
from musaops.app.services.node_hub import NodeHub

from tests.app.conftest import FAST, Recorder

pytestmark = pytest.mark.timeout(240)


class _WatchedLoop(asyncio.SelectorEventLoop):
    """The hub's loop. Notes the tasks still pending each time a run_until_complete returns
    (the hub's main coroutine, then shutdown_asyncgens) and at close, and every callback
    handed to it after the close (what raised "Event loop is closed" in the poller's loop).
    The first note asks whether the hub's shutdown itself waited for gRPC, whatever the
    loop turns after it happen to finish before the close."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: set[asyncio.Task] = set()
        self.late: list[str] = []

    def run_until_complete(self, future):  # noqa: ANN001, ANN201
        try:
            return super().run_until_complete(future)
        finally:
            self.pending |= asyncio.all_tasks(self)

    def close(self) -> None:
        if not self.is_closed():
            self.pending |= asyncio.all_tasks(self)
        super().close()

    def call_soon_threadsafe(self, callback, *args, **kwargs):  # noqa: ANN001, ANN201
        if self.is_closed():
            self.late.append(repr(callback))
        return super().call_soon_threadsafe(callback, *args, **kwargs)


def _watch_hub_loops(monkeypatch) -> None:  # noqa: ANN001
    new_event_loop = asyncio.new_event_loop
    monkeypatch.setattr(asyncio, "new_event_loop", lambda: _WatchedLoop()
                        if threading.current_thread().name == "NodeHub" else new_event_loop())


def _stop_busy_hub(live, other, deploy: bool) -> _WatchedLoop:
    """Starts a hub, gets every kind of call in flight, stops it twice; returns its loop.

    In flight at stop(): two telemetry streams and a Generate stream mid-answer; a node was
    removed and an audit page (Audit.Query) read just before."""
    rec = Recorder()
    hub = NodeHub(rec, FAST)
    hub.start()
    nid = hub.add_node(NodeAddress("127.0.0.1", live.port))
    twin = hub.add_node(NodeAddress("127.0.0.1", live.port, name="twin"))
    removed = hub.add_node(NodeAddress("127.0.0.1", other.port))
    for node in (nid, twin, removed):
        rec.wait_for(lambda n, a, node=node: n == "on_snapshots" and a[0] == node
                     and any(not s.backfill for s in a[1]))
    if deploy:
        op = hub.deploy(nid, DeploySpec("tiny-llama", dtype="float32", max_batch=2, max_context=2048))
        _, (ev,) = rec.wait_for(lambda n, a: n == "on_deploy_event" and a[0].op_id == op and a[0].done,
                                timeout=120)
        assert ev.ok, ev.message
    sid = hub.generate(nid, GenerateSpec("tiny-llama", prompt="Once upon a time",
                                         sampling=Sampling(max_tokens=1500, ignore_eos=True,
                                                           temperature=0.0)))
    rec.wait_for(lambda n, a: n == "on_tokens" and a[0].stream_id == sid)

    op = hub.audit_query(nid, AuditFilterSpec(), 0, 50)
    rec.wait_for(lambda n, a: n == "on_audit_page" and a[0] == op)
    loop = hub._loop
    hub.remove_node(removed)
    rec.wait_for(lambda n, a: n == "on_node_removed" and a[0] == removed)
    hub.stop()
    hub.stop()
    assert not hub.running
    return loop


def _mentions(record: logging.LogRecord, text: str) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return text in record.getMessage() or (exc is not None and text in str(exc))


def test_stop_settles_every_grpc_call_before_closing_its_loop(make_daemon, caplog,
                                                             monkeypatch) -> None:
    _watch_hub_loops(monkeypatch)
    caplog.set_level(logging.ERROR, logger="asyncio")
    unraisable: list = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        live, other = make_daemon(), make_daemon()
        # What a cancelled call still owes comes within a millisecond or so of stop(), so a
        # hub that does not wait for it is caught only when it comes late: often, not always,
        # hence five hubs in turn (each later one also keeps the poller handing over).
        loops = [_stop_busy_hub(live, other, deploy=i == 0) for i in range(5)]
    finally:
        sys.unraisablehook = hook
    for loop in loops:
        assert isinstance(loop, _WatchedLoop) and loop.is_closed()
        assert not loop.pending, f"left with tasks pending: {loop.pending}"
        assert not loop.late, f"handed to the closed loop: {loop.late}"
        assert not asyncio.all_tasks(loop)
    bad = [r for r in caplog.records
           if _mentions(r, "Event loop is closed") or _mentions(r, "Task was destroyed")]
    assert not bad, [r.getMessage() for r in bad]
    assert not unraisable, [(u.exc_type, u.exc_value, u.object) for u in unraisable]
