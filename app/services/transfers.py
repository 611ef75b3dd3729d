"""The Models service from the console's hub: import from the workstation, node-to-node pull,
delete and the repository's free space, each reported as core TransferEvents.

Runs on the NodeHub loop (the hub posts these as operations: `import_model`, `pull_model`,
`delete_model`, `repository_space`); file hashing and reading stay off the loop
(to_thread). Cancelling the hub operation cancels the RPC: what arrived stays staged on the
node, and the same import or pull resumes from it later.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, Callable

import grpc

from musaops.v1 import models_pb2, models_pb2_grpc, node_pb2, node_pb2_grpc
from musaops.v1.model_upload import UploadError, local_manifest, upload_chunks

from ..core.transfers import TransferEvent

PROGRESS_EVERY_S = 0.25
_STAGES = {models_pb2.TRANSFER_STAGE_RECEIVING: "receiving", models_pb2.TRANSFER_STAGE_VERIFYING: "verifying",
           models_pb2.TRANSFER_STAGE_DONE: "done"}
Emit = Callable[[TransferEvent], None]


async def _follow(call: Any, base: TransferEvent, emit: Emit, finish: Emit) -> None:
    """TransferProgress messages -> events; the last one (DONE or not) through `finish`."""
    last = None
    async for p in call:
        last = p
        stage = _STAGES.get(p.stage, "receiving")
        ev = TransferEvent(base.op_id, base.node_id, base.model, base.kind, stage, p.bytes_done, p.bytes_total,
                           p.rate_bytes_per_s, p.message, source_node_id=base.source_node_id)
        if stage == "done":
            finish(TransferEvent(**{**ev.__dict__, "done": True, "ok": True}))
            return
        emit(ev)
    finish(TransferEvent(base.op_id, base.node_id, base.model, base.kind, "failed",
                         last.bytes_done if last else 0, last.bytes_total if last else 0,
                         message="The node ended the transfer before it was done; start it again to resume.",
                         done=True, source_node_id=base.source_node_id))


async def import_model(channel: grpc.aio.Channel, metadata: tuple, base: TransferEvent, path: str,
                       emit: Emit, finish: Emit, describe: Callable[[grpc.RpcError], str]) -> None:
    def fail(stage: str, message: str) -> None:
        finish(TransferEvent(base.op_id, base.node_id, base.model, "import", stage, message=message, done=True))

    stop = threading.Event()
    last = [0.0]

    def hashed(done: int, total: int) -> None:   # hashing thread -> hub loop, at most 4 a second
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            emit(TransferEvent(base.op_id, base.node_id, base.model, "import", "hashing", done, total,
                               message="computing SHA-256 of the files"))
    call = None
    try:
        try:
            manifest = await asyncio.to_thread(local_manifest, Path(path), base.model, hashed, stop.is_set)
        except (UploadError, OSError) as exc:
            fail("failed", str(exc))
            return
        stub = models_pb2_grpc.ModelsStub(channel)
        status = await stub.ImportStatus(manifest, metadata=metadata, timeout=30)
        if status.exists:
            fail("failed", f"The node already holds a model named {base.model}; delete it there first.")
            return
        chunks = upload_chunks(manifest, Path(path), {o.path: o.offset for o in status.present})

        async def requests():
            while (msg := await asyncio.to_thread(next, chunks, None)) is not None:
                yield msg
        call = stub.ImportModel(requests(), metadata=metadata)
        await _follow(call, base, emit, finish)
    except asyncio.CancelledError:
        stop.set()
        if call is not None:
            call.cancel()
        fail("cancelled", "Cancelled by the operator; what arrived stays staged and a new import resumes it.")
    except UploadError as exc:
        fail("failed", str(exc))
    except grpc.RpcError as exc:
        fail("failed", describe(exc))


async def pull_model(channel: grpc.aio.Channel, metadata: tuple, base: TransferEvent,
                     request: models_pb2.PullRequest, emit: Emit, finish: Emit,
                     describe: Callable[[grpc.RpcError], str]) -> None:
    call = models_pb2_grpc.ModelsStub(channel).PullModel(request, metadata=metadata)
    try:
        await _follow(call, base, emit, finish)
    except asyncio.CancelledError:
        call.cancel()
        finish(TransferEvent(base.op_id, base.node_id, base.model, "pull", "cancelled",
                             message="Cancelled by the operator; a new copy resumes from what arrived.", done=True,
                             source_node_id=base.source_node_id))
    except grpc.RpcError as exc:
        finish(TransferEvent(base.op_id, base.node_id, base.model, "pull", "failed", message=describe(exc),
                             done=True, source_node_id=base.source_node_id))


async def delete_model(channel: grpc.aio.Channel, metadata: tuple, base: TransferEvent, finish: Emit,
                       describe: Callable[[grpc.RpcError], str]) -> None:
    try:
        r = await models_pb2_grpc.ModelsStub(channel).DeleteModel(
            models_pb2.DeleteModelRequest(model=base.model), metadata=metadata, timeout=120)
    except grpc.RpcError as exc:
        finish(TransferEvent(base.op_id, base.node_id, base.model, "delete", "failed", message=describe(exc),
                             done=True))
        return
    finish(TransferEvent(base.op_id, base.node_id, base.model, "delete", "done", r.freed_bytes, r.freed_bytes,
                         message=f"{base.model} deleted.", done=True, ok=True))


async def repository_space(channel: grpc.aio.Channel, metadata: tuple, base: TransferEvent, finish: Emit,
                           describe: Callable[[grpc.RpcError], str]) -> None:
    try:
        r = await node_pb2_grpc.NodeStub(channel).ListModels(node_pb2.ListModelsRequest(), metadata=metadata,
                                                             timeout=30)
    except grpc.RpcError as exc:
        finish(TransferEvent(base.op_id, base.node_id, "", "space", "failed", message=describe(exc), done=True))
        return
    finish(TransferEvent(base.op_id, base.node_id, "", "space", "done", message=r.repository, done=True, ok=True,
                         free_bytes=r.free_bytes))
