"""NodeHub: every conversation the console has with its daemons, on one asyncio thread.

Why it exists: the GUI thread must never make an RPC or wait on a future. NodeHub owns one
asyncio loop on one thread and one grpc.aio channel per node. Commands (`add_node`,
`deploy`, `generate`, `cancel`, ...) are thread-safe, return an id at once and are carried
out on the loop. Results come back only through the listener's `on_*` methods, called on
the hub thread with immutable dataclasses (never protobuf); errors arrive as values.

Listener methods (all optional; a missing one is skipped):
    on_status(NodeStatus)                          connection state changes
    on_snapshots(node_id, tuple[Snapshot])         telemetry, batched (<= ~20 batches/s/node)
    on_models(node_id, tuple[ModelEntry])          answer to refresh_models
    on_deploy_event(DeployEvent)                   Deploy stages; the last has done=True
    on_undeploy_done(UndeployResult)
    on_tokens(TokenChunk)                          Generate text, batched (<= ~20/s/stream)
    on_generation_done(GenerationDone)             exactly one per generate()
    on_command_error(CommandError)                 a command failed before its result
    on_node_removed(node_id)
    on_audit_page(op_id, audit_feed.Page)          answer to audit_query (errors as a value)
    on_audit_verified(op_id, audit_feed.VerifyOutcome)  answer to audit_verify
    on_keys_answer(op_id, keys_feed.KeysAnswer)    answer to keys_call (errors as a value)
    on_transfer(core.transfers.TransferEvent)      import_model, pull_model, delete_model and
                                                   repository_space steps (the last has done set)

When an OperatorLog is given, the last word of each deploy, undeploy and Generate is also
written to the console's operator log, here, where the operation is carried out.

Every connection supervises itself: GetInfo, then Telemetry.Stream with a backfill of the
history it missed; on failure it reports OFFLINE (or DEGRADED when the node answers but
telemetry does not flow) with a sentence, and retries with capped exponential backoff and
jitter on a fresh channel.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import grpc

from musaops.v1 import (inference_pb2_grpc, models_pb2, node_pb2, node_pb2_grpc, telemetry_pb2,
                        telemetry_pb2_grpc)

from ..core.nodes import ConnectionState, NodeAddress, NodeInfo, NodeStatus
from ..core.operations import (CommandError, DeployEvent, DeploySpec, GenerateSpec,
                               GenerationDone, ModelEntry, TokenChunk, UndeployResult)
from ..core.samples import Snapshot
from . import convert
from . import keys_feed
from .audit_feed import AuditFilterSpec, Page, VerifyOutcome, query_page, verify_node
from .keys_feed import KeysAnswer, KeysRequest
from .operator_log import OperatorLog
from . import transfers
from ..core.transfers import TransferEvent

log = logging.getLogger(__name__)

# Channel options: notice a silently dead peer (keepalive, from HubConfig), and let our own
# backoff (not grpc's) pace reconnects, since every attempt uses a fresh channel.
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.enable_retries", 0),
)

# Longest stop() waits for gRPC to finish the operations of cancelled calls (see _settle).
_SETTLE_TIMEOUT_S = 5.0


class NodeHubListener(Protocol):  # documentation of the interface; listeners may omit methods
    def on_status(self, status: NodeStatus) -> None: ...
    def on_snapshots(self, node_id: str, snapshots: tuple[Snapshot, ...]) -> None: ...
    def on_models(self, node_id: str, models: tuple[ModelEntry, ...]) -> None: ...
    def on_deploy_event(self, event: DeployEvent) -> None: ...
    def on_undeploy_done(self, result: UndeployResult) -> None: ...
    def on_tokens(self, chunk: TokenChunk) -> None: ...
    def on_generation_done(self, done: GenerationDone) -> None: ...
    def on_command_error(self, error: CommandError) -> None: ...
    def on_node_removed(self, node_id: str) -> None: ...
    def on_audit_page(self, op_id: str, page: Page) -> None: ...
    def on_audit_verified(self, op_id: str, outcome: VerifyOutcome) -> None: ...
    def on_keys_answer(self, op_id: str, answer: KeysAnswer) -> None: ...
    def on_transfer(self, event: TransferEvent) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with +-jitter: initial * factor**(attempt-1), at most cap."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        base = min(self.cap, self.initial * self.factor ** max(0, attempt - 1))
        return max(0.0, base * (1.0 + random.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True)
class HubConfig:
    telemetry_interval_ms: int = 1000
    backfill_seconds: int = 3600       # history asked for on the first connect
    batch_interval_s: float = 0.05     # at most 20 listener batches a second per node/stream
    rpc_timeout_s: float = 5.0         # unary RPCs (GetInfo, ListModels, Undeploy: see below)
    undeploy_timeout_s: float = 60.0
    backoff: Backoff = Backoff()
    # A connection that stays open while nothing arrives: after stale_after_s without a
    # snapshot (None: 3 telemetry intervals, at least 3 s) the node is DEGRADED; a keepalive
    # ping unanswered for keepalive_timeout_ms ends the channel (then OFFLINE and reconnect).
    stale_after_s: float | None = None
    keepalive_time_ms: int = 10_000
    keepalive_timeout_ms: int = 5_000

    @property
    def late_after_s(self) -> float:
        if self.stale_after_s is not None:
            return self.stale_after_s
        return max(3.0, 3 * self.telemetry_interval_ms / 1000.0)

    @property
    def channel_options(self) -> tuple[tuple[str, int], ...]:
        # ping_timeout: a keepalive ping is not sent while another ping (grpc's flow-control
        # probe) is unanswered, and that one otherwise times out only after 60 s.
        return (("grpc.keepalive_time_ms", self.keepalive_time_ms),
                ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
                ("grpc.http2.ping_timeout_ms", self.keepalive_time_ms + self.keepalive_timeout_ms),
                ) + _CHANNEL_OPTIONS


FIX_TOKEN = ("put a valid token in the node's connection (Connections, or Add node), or start "
             "the console with --token-file FILE")


def describe_rpc_error(err: grpc.aio.AioRpcError | grpc.RpcError, address: NodeAddress) -> str:
    """One sentence an operator can act on, in the console's terms (its Connections dialog,
    its options), never the daemon's advice to API callers. Credential problems start with
    "Unauthorized:" (the hub reports them as ConnectionState.UNAUTHORIZED)."""
    code = err.code()
    details = (err.details() or "").strip()
    low = details.lower()
    target = address.target
    if code == grpc.StatusCode.UNAVAILABLE:
        if "resolv" in low or "dns" in low or "name or service not known" in low \
                or "domain name not found" in low:
            return f"Cannot resolve the host name {address.host!r}: check the spelling, or use its IP address."
        if "connection refused" in low:
            return f"Cannot reach {target}: connection refused (is musad running on that port?)."
        if address.tls is not None:
            # An mTLS node closes the handshake of a client without a certificate: the
            # client sees only "Socket closed".
            if "peer_did_not_return_a_certificate" in low or "certificate required" in low \
                    or (not address.tls.cert and ("socket closed" in low or "connection reset" in low)):
                return (f"Unauthorized: {target} requires a client certificate (mTLS): add the "
                        f"certificate and key issued for this console to the connection (Connections).")
            if "hostname" in low or "host name" in low or "subject alternative name" in low \
                    or "peer name" in low or "does not match" in low:
                return (f"{target}'s certificate is not for the host name {address.host!r}: connect by "
                        f"a name its certificate lists, or reissue it (musad certs init --host {address.host}).")
            if "certificate verify failed" in low or "certificate_verify_failed" in low \
                    or "unknown ca" in low or "unable to get local issuer" in low \
                    or "self signed" in low or "self-signed" in low:
                return (f"{target}'s certificate is not signed by the CA in this connection: use the "
                        f"node's ca.pem (Connections).")
            if "wrong_version_number" in low or "wrong version" in low or "packet_length_too_long" in low \
                    or "http_request" in low or "record layer failure" in low:
                return (f"{target} does not speak TLS: remove the CA from the connection (Connections), "
                        f"or enable TLS on the node.")
            if any(w in low for w in ("ssl", "tls", "handshake", "certificate", "socket closed")):
                return (f"TLS handshake with {target} failed: check the CA, certificate and key "
                        f"files of the connection and whether the node uses TLS ({details}).")
        elif "socket closed" in low or "connection reset" in low or "eof" in low \
                or "ssl" in low or "tls" in low or "handshake" in low:
            return (f"{target} requires TLS: add the node's CA file (and for mTLS a client "
                    f"certificate and key) to the connection (Connections).")
        return f"{target} is unavailable: {details or 'no answer'}."
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if not address.token:
            return f"Unauthorized: {target} requires a token and this connection has no token: {FIX_TOKEN}."
        return f"Unauthorized: {target} rejected this connection's token (wrong, revoked or expired): {FIX_TOKEN}."
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"Permission denied by {target}: {details or 'this token may not do that'}."
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{target} did not answer in time."
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"{target} does not implement this call (is it a musad of the same version?)."
    if code == grpc.StatusCode.CANCELLED:
        return "Cancelled."
    return f"{details or code.name.replace('_', ' ').lower()} ({code.name})"


def _read_tls(address: NodeAddress) -> grpc.ChannelCredentials:
    tls = address.tls
    assert tls is not None

    def read(path: str, what: str) -> bytes | None:
        if not path:
            return None
        try:
            return Path(path).expanduser().read_bytes()
        except OSError as e:
            raise ValueError(f"Cannot read the TLS {what} file {path}: {e.strerror or e}.") from e

    return grpc.ssl_channel_credentials(root_certificates=read(tls.ca, "CA"),
                                        private_key=read(tls.key, "key"),
                                        certificate_chain=read(tls.cert, "certificate"))


class _Node:
    """Hub-thread state of one connection."""

    def __init__(self, node_id: str, address: NodeAddress) -> None:
        self.id = node_id
        self.address = address
        self.channel: grpc.aio.Channel | None = None
        self.task: asyncio.Task | None = None
        self.status = NodeStatus(node_id, address, ConnectionState.CONNECTING)
        self.pending: list[Snapshot] = []
        self.flush: asyncio.TimerHandle | None = None
        self.last_rx = 0.0            # monotonic time of the last snapshot
        self.last_snapshot_ms = 0     # time_unix_ms of the newest snapshot (for backfill)
        self.stale = False            # DEGRADED because telemetry stopped arriving

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        tok = self.address.token
        return (("authorization", f"Bearer {tok}"),) if tok else ()


class NodeHub:
    def __init__(self, listener: Any, config: HubConfig | None = None,
                 oplog: OperatorLog | None = None) -> None:
        self.listener = listener
        self.config = config or HubConfig()
        self.oplog = oplog
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._nodes: dict[str, _Node] = {}
        self._ops: dict[str, asyncio.Task] = {}
        self._ids = itertools.count(1)
        self._ids_lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="NodeHub",
                                        daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancels every stream, closes every channel and joins the hub thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:  # loop already closed
                pass
        thread.join(timeout)
        if thread.is_alive():  # a daemon thread: it cannot keep the process alive
            log.warning("NodeHub thread did not stop within %.0f s", timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(ready))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        ready.set()
        watchdog = asyncio.get_running_loop().create_task(self._watchdog())
        await self._stopping.wait()
        watchdog.cancel()
        tasks = [n.task for n in self._nodes.values() if n.task] + list(self._ops.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(watchdog, *tasks, return_exceptions=True)
        for n in self._nodes.values():
            await self._close_channel(n)
        await self._settle(_SETTLE_TIMEOUT_S)

    async def _settle(self, timeout: float) -> None:
        """Waits until nothing but this task is left on the loop, so _run closes an idle loop.

        Why: cancelling a grpc.aio call and closing its channel return at once, while gRPC
        core still owes the call's completions (a streaming call keeps a task on this loop
        waiting for its status, and supervisors of removed or updated nodes may still be
        closing their channels). gRPC's one completion-queue poller per process hands those
        completions to this loop with call_soon_threadsafe; after loop.close() that raised
        "RuntimeError: Event loop is closed" in whichever loop runs the poller (another hub's,
        or an in-process daemon's), and the events queued behind it there waited. The
        completions of cancelled calls come within milliseconds; the timeout only bounds a
        misbehaving core."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        current = asyncio.current_task()
        while others := asyncio.all_tasks() - {current}:
            left = deadline - loop.time()
            if left <= 0:
                log.warning("NodeHub: %d task(s) still pending after %.0f s at shutdown: %s",
                            len(others), timeout, ", ".join(sorted(map(repr, others)))[:500])
                for t in others:
                    t.cancel()
                return
            await asyncio.wait(others, timeout=left)

    # --- commands (any thread) ------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        with self._ids_lock:
            return f"{prefix}-{next(self._ids)}"

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._loop is None or not self.running:
            raise RuntimeError("NodeHub is not running (call start() first).")
        self._loop.call_soon_threadsafe(fn, *args)

    def add_node(self, address: NodeAddress, node_id: str | None = None) -> str:
        node_id = node_id or self.new_id("node")
        self._post(self._add_node, node_id, address)
        return node_id

    def update_node(self, node_id: str, address: NodeAddress) -> None:
        self._post(self._update_node, node_id, address)

    def remove_node(self, node_id: str) -> None:
        self._post(self._remove_node, node_id)

    def refresh_models(self, node_id: str) -> None:
        self._post(self._start_op, self.new_id("models"), node_id, self._list_models, ())

    def deploy(self, node_id: str, spec: DeploySpec) -> str:
        op_id = self.new_id("deploy")
        self._post(self._start_op, op_id, node_id, self._deploy, (op_id, spec))
        return op_id

    def undeploy(self, node_id: str, model: str, cancel_inflight: bool = False) -> None:
        self._post(self._start_op, self.new_id("undeploy"), node_id, self._undeploy,
                   (model, cancel_inflight))

    def generate(self, node_id: str, spec: GenerateSpec) -> str:
        stream_id = self.new_id("gen")
        self._post(self._start_op, stream_id, node_id, self._generate, (stream_id, spec))
        return stream_id

    def cancel(self, op_id: str) -> None:
        """Cancels a deploy or a generate stream (its RPC is cancelled; the daemon stops)."""
        self._post(self._cancel, op_id)

    def audit_query(self, node_id: str, spec: AuditFilterSpec, cursor: int, limit: int,
                    op_id: str | None = None) -> str:
        """One Audit.Query page, newest first, of records older than `cursor` (0 = newest).
        A caller that registers the id before the answer can come passes its own."""
        op_id = op_id or self.new_id("audit-query")
        self._post(self._start_op, op_id, node_id, self._audit_query, (op_id, spec, cursor, limit))
        return op_id

    def audit_verify(self, node_id: str, op_id: str | None = None) -> str:
        op_id = op_id or self.new_id("audit-verify")
        self._post(self._start_op, op_id, node_id, self._audit_verify, (op_id,))
        return op_id

    def keys_call(self, node_id: str, request: KeysRequest, op_id: str | None = None) -> str:
        """One Keys / KeyUsage call (list, create, limits, revoke, usage); answered through
        on_keys_answer(op_id, KeysAnswer)."""
        op_id = op_id or self.new_id("keys")
        self._post(self._start_op, op_id, node_id, self._keys_call, (op_id, request))
        return op_id

    # Models service (services/transfers.py): answered through on_transfer(TransferEvent).
    def import_model(self, node_id: str, path: str, name: str, op_id: str | None = None) -> str:
        """Uploads a folder or .gguf from this workstation into node_id's repository as `name`;
        cancel(op_id) stops it (a new import of the same files resumes)."""
        op_id = op_id or self.new_id("import")
        self._post(self._start_op, op_id, node_id, self._transfer, (op_id, "import", name, path))
        return op_id

    def pull_model(self, node_id: str, source_node_id: str, model: str, op_id: str | None = None) -> str:
        """node_id fetches `model` from source_node_id itself, with the console's credential
        for the source (its token; TLS when the console reaches the source over TLS)."""
        op_id = op_id or self.new_id("pull")
        self._post(self._start_op, op_id, node_id, self._transfer, (op_id, "pull", model, source_node_id))
        return op_id

    def delete_model(self, node_id: str, model: str, op_id: str | None = None) -> str:
        op_id = op_id or self.new_id("delete")
        self._post(self._start_op, op_id, node_id, self._transfer, (op_id, "delete", model, ""))
        return op_id

    def repository_space(self, node_id: str, op_id: str | None = None) -> str:
        """Free disk of node_id's repository (TransferEvent kind "space", free_bytes)."""
        op_id = op_id or self.new_id("space")
        self._post(self._start_op, op_id, node_id, self._transfer, (op_id, "space", "", ""))
        return op_id

    def emit(self, method: str, *args: Any) -> None:
        """Calls listener.method(*args) if it exists; listener errors never kill the hub."""
        fn = getattr(self.listener, method, None)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # a buggy listener must not take the connections down
            log.exception("NodeHub listener %s failed", method)

    # --- node supervision (hub thread) ----------------------------------------------------

    def _add_node(self, node_id: str, address: NodeAddress) -> None:
        if node_id in self._nodes:
            self._update_node(node_id, address)
            return
        node = self._nodes[node_id] = _Node(node_id, address)
        node.task = asyncio.get_running_loop().create_task(self._supervise(node))

    def _update_node(self, node_id: str, address: NodeAddress) -> None:
        node = self._nodes.get(node_id)
        if node is None:
            self._add_node(node_id, address)
            return
        if node.task:
            node.task.cancel()
        node.address = address
        node.status = replace(node.status, address=address)
        node.last_snapshot_ms = 0
        node.task = asyncio.get_running_loop().create_task(self._supervise(node))

    def _remove_node(self, node_id: str) -> None:
        node = self._nodes.pop(node_id, None)
        if node is None:
            return
        if node.task:
            node.task.cancel()
        if node.flush:
            node.flush.cancel()
        self.emit("on_node_removed", node_id)

    def _set_status(self, node: _Node, state: ConnectionState, error: str = "",
                    info: NodeInfo | None = None, retry_in: float = 0.0) -> None:
        old = node.status
        new = replace(old, address=node.address, state=state, last_error=error,
                      info=info or old.info, retry_in=retry_in)
        if new != old:
            node.status = new
            self.emit("on_status", new)

    async def _close_channel(self, node: _Node, channel: grpc.aio.Channel | None = None) -> None:
        """Closes `channel` (default: the node's current one). A supervisor closes only the
        channel it opened: after update_node a new supervisor may already own node.channel."""
        ch = node.channel if channel is None else channel
        if node.channel is ch:
            node.channel = None
        if ch is not None:
            try:
                await ch.close(grace=None)
            except Exception:  # closing must not fail the supervisor
                log.debug("closing channel of %s", node.id, exc_info=True)

    def _make_channel(self, address: NodeAddress) -> grpc.aio.Channel:
        if address.tls is not None:
            return grpc.aio.secure_channel(address.target, _read_tls(address),
                                           self.config.channel_options)
        return grpc.aio.insecure_channel(address.target, self.config.channel_options)

    async def _supervise(self, node: _Node) -> None:
        cfg = self.config
        problem = node.address.problem()
        if problem:
            self._set_status(node, ConnectionState.OFFLINE, problem)
            return
        attempt = 0
        while True:
            if attempt == 0:  # retries stay OFFLINE/DEGRADED (with retry_in) instead of flapping
                self._set_status(node, ConnectionState.CONNECTING, node.status.last_error)
            answered = False
            channel = None
            try:
                channel = node.channel = self._make_channel(node.address)
                reply = await node_pb2_grpc.NodeStub(channel).GetInfo(
                    node_pb2.GetInfoRequest(), timeout=cfg.rpc_timeout_s, metadata=node.metadata)
                answered = True
                info = convert.node_info(reply)
                node.status = replace(node.status, last_seen=time.time())
                node.stale = False
                node.last_rx = time.monotonic()
                self._set_status(node, ConnectionState.ONLINE, info=info)
                attempt = 0
                await self._stream_telemetry(node, channel)
                error = f"{node.address.target} ended the telemetry stream."
            except asyncio.CancelledError:
                if channel is not None:
                    await self._close_channel(node, channel)
                raise
            except grpc.RpcError as e:
                error = describe_rpc_error(e, node.address)
            except ValueError as e:  # unreadable TLS files, bad target
                error = str(e)
            except Exception as e:  # never let one node's surprise kill the hub
                log.exception("node %s", node.id)
                error = f"{type(e).__name__}: {e}"
            if channel is not None:
                await self._close_channel(node, channel)
            attempt += 1
            delay = cfg.backoff.delay(attempt)
            if error.startswith("Unauthorized:"):   # waiting will not fix it: the connection must
                state = ConnectionState.UNAUTHORIZED
            elif answered and not _is_unreachable(error):
                state = ConnectionState.DEGRADED
            else:
                state = ConnectionState.OFFLINE
            self._set_status(node, state, error, retry_in=delay)
            await asyncio.sleep(delay)

    async def _stream_telemetry(self, node: _Node, channel: grpc.aio.Channel) -> None:
        cfg = self.config
        if node.last_snapshot_ms:  # reconnect: ask only for what we missed
            missed = time.time() - node.last_snapshot_ms / 1000.0
            backfill = int(min(cfg.backfill_seconds, max(0.0, missed) + 2))
        else:
            backfill = cfg.backfill_seconds
        call = telemetry_pb2_grpc.TelemetryStub(channel).Stream(
            telemetry_pb2.StreamRequest(interval_ms=cfg.telemetry_interval_ms,
                                        backfill_seconds=backfill),
            metadata=node.metadata)
        try:
            async for msg in call:
                self._on_snapshot(node, convert.snapshot(msg))
        finally:
            call.cancel()
            self._flush_snapshots(node)

    def _on_snapshot(self, node: _Node, snap: Snapshot) -> None:
        node.pending.append(snap)
        node.last_rx = time.monotonic()
        if snap.time_unix_ms > node.last_snapshot_ms:
            node.last_snapshot_ms = snap.time_unix_ms
        if node.stale:
            node.stale = False
            node.status = replace(node.status, last_seen=time.time())
            self._set_status(node, ConnectionState.ONLINE)
        if node.flush is None:
            node.flush = asyncio.get_running_loop().call_later(
                self.config.batch_interval_s, self._flush_snapshots, node)

    def _flush_snapshots(self, node: _Node) -> None:
        if node.flush is not None:
            node.flush.cancel()
            node.flush = None
        if node.pending and node.id in self._nodes:
            batch, node.pending = tuple(node.pending), []
            # last_seen once per batch, not per snapshot (a back-fill brings hundreds)
            node.status = replace(node.status, last_seen=time.time())
            self.emit("on_snapshots", node.id, batch)

    async def _watchdog(self) -> None:
        """Marks ONLINE nodes whose telemetry stopped arriving as DEGRADED (the connection is
        still open, or its RPC would have failed and the supervisor would report it)."""
        late_after = self.config.late_after_s
        tick = min(1.0, late_after / 3)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for node in list(self._nodes.values()):
                if (node.status.state is ConnectionState.ONLINE and node.last_rx
                        and now - node.last_rx > late_after):
                    node.stale = True
                    since = time.strftime("%H:%M:%S",
                                          time.localtime(time.time() - (now - node.last_rx)))
                    self._set_status(node, ConnectionState.DEGRADED,
                                     f"No telemetry from {node.address.target} since {since}: "
                                     f"the connection is open but nothing arrives.")

    # --- operations (hub thread) ----------------------------------------------------------

    def _start_op(self, op_id: str, node_id: str, fn: Callable[..., Awaitable[None]],
                  args: tuple) -> None:
        node = self._nodes.get(node_id)
        task = asyncio.get_running_loop().create_task(self._op_guard(op_id, node_id, node, fn, args))
        self._ops[op_id] = task
        task.add_done_callback(lambda _t: self._ops.pop(op_id, None))

    async def _op_guard(self, op_id: str, node_id: str, node: _Node | None,
                        fn: Callable[..., Awaitable[None]], args: tuple) -> None:
        if node is None or node.channel is None:
            why = (f"Unknown node {node_id}." if node is None else
                   f"{node.address.label} is {node.status.state.value}"
                   + (f": {node.status.last_error}" if node.status.last_error else "."))
            await fn(node_id, None, *args, unavailable=why)
            return
        await fn(node_id, node, *args, unavailable="")

    def _cancel(self, op_id: str) -> None:
        task = self._ops.get(op_id)
        if task is None:
            return
        if inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_CREATED:
            # Not at its first step yet: cancelling now would skip the op's own handler and
            # its final event (no GenerationDone / DeployEvent). Retry once it is running.
            asyncio.get_running_loop().call_soon(self._cancel, op_id)
            return
        task.cancel()

    async def _list_models(self, node_id: str, node: _Node | None, *,
                           unavailable: str) -> None:
        if node is None:
            self.emit("on_command_error", CommandError(node_id, "list_models", unavailable))
            return
        try:
            reply = await node_pb2_grpc.NodeStub(node.channel).ListModels(
                node_pb2.ListModelsRequest(), timeout=self.config.rpc_timeout_s,
                metadata=node.metadata)
        except grpc.RpcError as e:
            self.emit("on_command_error",
                      CommandError(node_id, "list_models", describe_rpc_error(e, node.address)))
            return
        self.emit("on_models", node_id, tuple(convert.model_entry(m) for m in reply.models))

    async def _deploy(self, node_id: str, node: _Node | None, op_id: str, spec: DeploySpec, *,
                      unavailable: str) -> None:
        def fail(stage: str, message: str) -> None:
            self._finish("on_deploy_event", DeployEvent(op_id, node_id, spec.model, stage,
                                                        message=message, done=True, ok=False))

        if node is None:
            fail("failed", unavailable)
            return
        call = node_pb2_grpc.NodeStub(node.channel).Deploy(convert.deploy_request(spec),
                                                           metadata=node.metadata)
        finished = False
        try:
            async for p in call:
                stage = convert.DEPLOY_STAGES.get(p.stage, "validating")
                done = stage in ("ready", "failed")
                finished |= done
                (self._finish if done else self.emit)("on_deploy_event", DeployEvent(
                    op_id, node_id, spec.model, stage, fraction=p.fraction, message=p.message,
                    done=done, ok=stage == "ready", done_bytes=p.done_bytes,
                    total_bytes=p.total_bytes, elapsed_seconds=p.elapsed_seconds,
                    entry=convert.model_entry(p.model) if p.HasField("model") else None))
                if done:
                    break
            if not finished:
                fail("failed", "The node ended the deploy stream without a result.")
        except asyncio.CancelledError:
            call.cancel()
            fail("cancelled", "Deploy cancelled by the operator.")
        except grpc.RpcError as e:
            fail("failed", describe_rpc_error(e, node.address))

    async def _undeploy(self, node_id: str, node: _Node | None, model: str,
                        cancel_inflight: bool, *, unavailable: str) -> None:
        if node is None:
            self._finish("on_undeploy_done", UndeployResult(node_id, model, False, unavailable))
            return
        mode = node_pb2.UNDEPLOY_MODE_CANCEL if cancel_inflight else node_pb2.UNDEPLOY_MODE_DRAIN
        try:
            r = await node_pb2_grpc.NodeStub(node.channel).Undeploy(
                node_pb2.UndeployRequest(model=model, mode=mode),
                timeout=self.config.undeploy_timeout_s, metadata=node.metadata)
        except grpc.RpcError as e:
            self._finish("on_undeploy_done", UndeployResult(node_id, model, False,
                                                            describe_rpc_error(e, node.address)))
            return
        self._finish("on_undeploy_done", UndeployResult(
            node_id, model, True, f"{model} undeployed.", r.freed_bytes, r.cancelled_requests,
            r.drained_requests))

    async def _generate(self, node_id: str, node: _Node | None, stream_id: str,
                        spec: GenerateSpec, *, unavailable: str) -> None:
        if node is None:
            self._finish("on_generation_done", GenerationDone(stream_id, "error", error=unavailable,
                                                              node_id=node_id))
            return
        loop = asyncio.get_running_loop()
        text: list[str] = []
        tokens = 0
        request_id = spec.request_id
        handle: asyncio.TimerHandle | None = None

        def flush() -> None:
            nonlocal text, tokens, handle
            if handle is not None:
                handle.cancel()
                handle = None
            if text:
                chunk = TokenChunk(stream_id, "".join(text), tokens, node_id, request_id)
                text, tokens = [], 0
                self.emit("on_tokens", chunk)

        call = inference_pb2_grpc.InferenceStub(node.channel).Generate(
            convert.generate_request(spec), metadata=node.metadata)
        done: GenerationDone
        try:
            result = None
            async for r in call:
                if r.request_id:
                    request_id = r.request_id
                kind = r.WhichOneof("kind")
                if kind == "text":
                    text.append(r.text)
                    tokens += r.tokens
                    if handle is None:
                        handle = loop.call_later(self.config.batch_interval_s, flush)
                elif kind == "result":
                    result = r.result
            if result is None:
                done = GenerationDone(stream_id, "error",
                                      error="The node ended the stream without a result.",
                                      node_id=node_id, request_id=request_id)
            else:
                done = GenerationDone(stream_id, convert.finish_reason(result.finish_reason),
                                      convert.usage(result.usage), convert.timings(result.timings),
                                      result.error, result.stop, node_id, request_id)
        except asyncio.CancelledError:
            call.cancel()
            done = GenerationDone(stream_id, "cancelled", error="Stopped by the operator.",
                                  node_id=node_id, request_id=request_id)
        except grpc.RpcError as e:
            done = GenerationDone(stream_id, "error", error=describe_rpc_error(e, node.address),
                                  node_id=node_id, request_id=request_id)
        flush()
        self._finish("on_generation_done", done)

    async def _audit_query(self, node_id: str, node: _Node | None, op_id: str,
                           spec: AuditFilterSpec, cursor: int, limit: int, *,
                           unavailable: str) -> None:
        if node is None:
            page = Page(node_id, (), True, unavailable)
        else:
            try:
                page = await query_page(node.channel, node.metadata, node_id, spec, cursor, limit)
            except Exception as e:  # an answer in every case: the view and exports wait for one
                log.exception("audit query on %s", node_id)
                page = Page(node_id, (), True, f"{type(e).__name__}: {e}")
        self.emit("on_audit_page", op_id, page)

    async def _audit_verify(self, node_id: str, node: _Node | None, op_id: str, *,
                            unavailable: str) -> None:
        if node is None:
            outcome = VerifyOutcome(node_id, False, 0, "", error=unavailable)
        else:
            try:
                outcome = await verify_node(node.channel, node.metadata, node_id)
            except Exception as e:
                log.exception("audit verify on %s", node_id)
                outcome = VerifyOutcome(node_id, False, 0, "", error=f"{type(e).__name__}: {e}")
        self.emit("on_audit_verified", op_id, outcome)

    async def _keys_call(self, node_id: str, node: _Node | None, op_id: str, request: KeysRequest, *,
                         unavailable: str) -> None:
        if node is None:
            answer = KeysAnswer(node_id, request, error=unavailable)
        else:
            try:
                answer = await keys_feed.call(node.channel, node.metadata, node_id, request,
                                              timeout=max(self.config.rpc_timeout_s, 30.0))
            except grpc.RpcError as e:
                answer = KeysAnswer(node_id, request, error=describe_rpc_error(e, node.address))
            except Exception as e:  # an answer in every case: the view waits for one
                log.exception("keys call on %s", node_id)
                answer = KeysAnswer(node_id, request, error=f"{type(e).__name__}: {e}")
        self.emit("on_keys_answer", op_id, answer)

    async def _transfer(self, node_id: str, node: _Node | None, op_id: str, kind: str, model: str, arg: str, *,
                        unavailable: str) -> None:
        source = self._nodes.get(arg) if kind == "pull" else None
        base = TransferEvent(op_id, node_id, model, kind, "receiving", source_node_id=arg if kind == "pull" else "")

        def emit(ev: TransferEvent) -> None:   # from the hashing thread too: onto the hub loop
            loop = self._loop
            if loop is not None and threading.current_thread() is not self._thread:
                loop.call_soon_threadsafe(self.emit, "on_transfer", ev)
            else:
                self.emit("on_transfer", ev)

        def finish(ev: TransferEvent) -> None:
            self.emit("on_transfer", ev)
            if ev.ok and ev.kind in ("import", "pull", "delete") and node is not None:
                self._post(self._start_op, self.new_id("models"), node_id, self._list_models, ())

        if node is None:
            finish(TransferEvent(op_id, node_id, model, kind, "failed", message=unavailable, done=True))
            return
        describe = lambda e: describe_rpc_error(e, node.address)  # noqa: E731
        if kind == "import":
            await transfers.import_model(node.channel, node.metadata, base, arg, emit, finish, describe)
        elif kind == "pull":
            if source is None:
                finish(TransferEvent(op_id, node_id, model, kind, "failed", done=True,
                                     message=f"Unknown source node {arg}."))
                return
            req = models_pb2.PullRequest(source=source.address.target, model=model,
                                         token=source.address.token or "", tls=source.address.tls is not None)
            await transfers.pull_model(node.channel, node.metadata, base, req, emit, finish, describe)
        elif kind == "delete":
            await transfers.delete_model(node.channel, node.metadata, base, finish, describe)
        else:
            await transfers.repository_space(node.channel, node.metadata, base, finish, describe)

    def _finish(self, method: str, result: DeployEvent | UndeployResult | GenerationDone) -> None:
        """A command's last word: to the listener, and to the operator log."""
        self.emit(method, result)
        if self.oplog is not None:
            node = self._nodes.get(result.node_id)
            try:
                self.oplog.record_result(result, node.address.label if node else result.node_id)
            except Exception:  # the log must not take the connections down either
                log.exception("operator log")


def _is_unreachable(error: str) -> bool:
    """Errors meaning the node itself is gone (OFFLINE), as opposed to a failing call."""
    low = error.lower()
    return any(w in low for w in ("cannot reach", "unavailable", "closed the connection",
                                  "tls", "certificate", "cannot resolve", "did not answer"))
