"""Models service: ImportModel, ImportStatus, ExportModel, PullModel, DeleteModel over gRPC.

The file work (staging, digests, resume, atomic install) is daemon/model_transfer.py; this
module turns messages into its calls (a pull of several files over up to `models.pull_streams`
ExportModel streams side by side), streams progress every 0.25 s, and audits
each operation on this node ("models.<Method>", outcome ok / failed).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import pathlib

import grpc

from musaops.v1 import models_pb2, models_pb2_grpc

from .. import model_transfer as mt
from ..digest_cache import FILE_NAME as DIGESTS_FILE, DigestCache
from ..errors import RequestError, Status, shown
from ..trust.tls import channel_credentials
from .status import abort

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.25
WRITES_IN_FLIGHT = 4
P = models_pb2.TransferProgress


def _specs(m: models_pb2.ModelManifest) -> list[mt.FileSpec]:
    return [mt.FileSpec(f.path, f.size, f.sha256.lower()) for f in m.files]


def _manifest(name: str, specs: list[mt.FileSpec]) -> models_pb2.ModelManifest:
    return models_pb2.ModelManifest(name=name, files=[models_pb2.FileEntry(path=f.path, size=f.size, sha256=f.sha256)
                                                      for f in specs])


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    def __init__(self, ctx):
        self.ctx = ctx
        mt.keep_chunk_buffers()
        self.digests = DigestCache(pathlib.Path(ctx.config.storage.state_dir) / DIGESTS_FILE)   # ExportModel's
        removed = mt.clean_staging(self.root, ctx.config.models.staging_max_age_s)   # start-up, before serving
        if removed:
            log.info("removed %d abandoned staged transfer(s) from %s: %s", len(removed), self.root / mt.STAGING,
                     ", ".join(removed[:10]))

    @property
    def root(self) -> pathlib.Path:
        return pathlib.Path(self.ctx.repository.root)

    def _open(self, name: str, specs: list[mt.FileSpec]) -> mt.Transfer:
        cfg = self.ctx.config.models
        return mt.Transfer(self.root, name, specs, reserve_bytes=cfg.reserve_bytes, max_bytes=cfg.max_model_bytes)

    async def _audited(self, action: str, state: dict, params: dict, gen, context):
        """Streams `gen`'s messages; audits the end (ok, or failed with the sentence);
        a RequestError ends the RPC with its status."""
        outcome, error = "failed", "the caller went away before it finished"
        try:
            async for msg in gen:
                yield msg
            outcome, error = "ok", ""
        except RequestError as exc:
            error = exc.message
            await abort(context, exc)
        finally:
            try:
                await asyncio.shield(self.ctx.record(action, state["name"], params, outcome, error))
            except Exception:  # noqa: BLE001 - never mask the RPC's own end
                log.exception("auditing %s of %s failed", action, state["name"])

    # -- import from the client ----------------------------------------------------------

    async def ImportStatus(self, request, context):
        specs = _specs(request)
        try:
            mt.check_manifest(request.name, specs, self.ctx.config.models.max_model_bytes)
        except RequestError as exc:
            await abort(context, exc)
        offsets = await asyncio.to_thread(mt.staged_offsets, self.root, request.name, specs)
        return models_pb2.ImportStatusResponse(
            present=[models_pb2.FileOffset(path=p, offset=o) for p, o in offsets.items()],
            free_bytes=self.ctx.repository.free_bytes(), reserve_bytes=self.ctx.config.models.reserve_bytes,
            exists=(self.root / request.name).exists())

    def ImportModel(self, request_iterator, context):
        state = {"name": ""}

        async def body():
            first = await anext(aiter(request_iterator), None)
            if first is None or not first.HasField("header"):
                raise RequestError(Status.INVALID_ARGUMENT, "ImportModel must start with the header (the manifest)")
            state["name"] = first.header.name
            specs = _specs(first.header)
            tr = await asyncio.to_thread(self._open, first.header.name, specs)
            try:
                async for msg in self._receive(tr, [_data_chunks(request_iterator)]):
                    yield msg
            finally:
                await asyncio.to_thread(tr.close)

        return self._audited("models.ImportModel", state, {}, body(), context)

    async def _receive(self, tr: mt.Transfer, streams: list):
        """Writes the chunks of each stream (an async iterator of (path, offset, data)) into
        the transfer, the streams side by side; yields progress; installs when complete.

        Each stream has a writer thread and a lane of the transfer (its own open file and
        hashing thread): it writes in order while the stream's next chunks arrive, at most
        WRITES_IN_FLIGHT chunks waiting for it (memory stays a few MiB per stream). The first
        stream that fails ends the others."""
        rate = mt.Rate(tr.done)
        yield P(stage=models_pb2.TRANSFER_STAGE_RECEIVING, bytes_done=tr.done, bytes_total=tr.total,
                message=f"resuming at {tr.done:,} of {tr.total:,} bytes" if tr.done else "receiving")
        latest = {"file": ""}
        tasks = [asyncio.create_task(_pump(tr.lane(), chunks, latest)) for chunks in streams]
        try:
            while tasks:
                done, _ = await asyncio.wait(tasks, timeout=PROGRESS_EVERY_S, return_when=asyncio.FIRST_EXCEPTION)
                for t in tasks:
                    if t in done and not t.cancelled() and t.exception() is not None:
                        raise t.exception()
                if len(done) == len(tasks):
                    break
                yield P(stage=models_pb2.TRANSFER_STAGE_RECEIVING, bytes_done=tr.done, bytes_total=tr.total,
                        rate_bytes_per_s=rate(tr.done), file=latest["file"])
        finally:   # a failed or cancelled transfer: every stream's queued writes end before its files close
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        yield P(stage=models_pb2.TRANSFER_STAGE_VERIFYING, bytes_done=tr.done, bytes_total=tr.total,
                rate_bytes_per_s=rate(tr.done))
        dest = await asyncio.to_thread(tr.install)
        yield P(stage=models_pb2.TRANSFER_STAGE_DONE, bytes_done=tr.done, bytes_total=tr.total,
                rate_bytes_per_s=rate(tr.done), message=f"{dest.name} is in the repository")

    # -- export and pull -----------------------------------------------------------------

    async def ExportModel(self, request, context):
        try:
            path, specs = await asyncio.to_thread(mt.model_files, self.root, request.model, self.digests)
        except RequestError as exc:
            await abort(context, exc)
        yield models_pb2.ExportChunk(manifest=_manifest(request.model, specs))
        if request.manifest_only:
            return
        offsets = {o.path: o.offset for o in request.offsets}
        wanted = set(request.paths)
        unknown = wanted - {f.path for f in specs}
        if unknown:
            await abort(context, RequestError(Status.INVALID_ARGUMENT, f"{shown(request.model)} has no file "
                                              f"{shown(min(unknown))}"))
        for f in specs:
            if wanted and f.path not in wanted:
                continue
            off = offsets.get(f.path, 0)
            if off >= f.size:
                continue
            fd = await asyncio.to_thread(os.open, path / f.path, os.O_RDONLY)
            try:
                while off < f.size:
                    data = await asyncio.to_thread(os.pread, fd, min(mt.SEND_CHUNK, f.size - off), off)
                    if not data:
                        await context.abort(grpc.StatusCode.DATA_LOSS, f"{f.path} shrank while it was sent")
                    yield models_pb2.ExportChunk(data=models_pb2.FileData(path=f.path, offset=off, data=data))
                    off += len(data)
            finally:
                os.close(fd)
        await self.ctx.record("models.ExportModel", request.model,
                              {"files": len(specs), **({"sent_files": len(wanted)} if wanted else {})}, "ok")

    def PullModel(self, request, context):
        state = {"name": request.model}
        params = {"source": request.source, "tls": request.tls}

        async def body():
            mt.check_name(request.model)
            async with self._source_channel(request) as ch:
                stub = models_pb2_grpc.ModelsStub(ch)
                md = (("authorization", f"Bearer {request.token}"),) if request.token else None
                try:
                    head = await anext(aiter(stub.ExportModel(
                        models_pb2.ExportRequest(model=request.model, manifest_only=True), metadata=md)))
                except grpc.aio.AioRpcError as exc:
                    raise _source_error(request, exc) from None
                specs = _specs(head.manifest)
                tr = await asyncio.to_thread(self._open, request.model, specs)
                try:   # one ExportModel stream per group of files, the groups about equal in bytes
                    groups = mt.plan_streams(specs, tr.offsets, self.ctx.config.models.pull_streams)
                    calls = [stub.ExportModel(models_pb2.ExportRequest(
                        model=request.model, paths=g,
                        offsets=[models_pb2.FileOffset(path=p, offset=tr.offsets[p]) for p in g]), metadata=md)
                        for g in groups]
                    try:
                        async for msg in self._receive(tr, [_export_chunks(c, specs, request, set(g))
                                                            for c, g in zip(calls, groups)]):
                            yield msg
                    finally:
                        for c in calls:
                            c.cancel()
                finally:
                    await asyncio.to_thread(tr.close)

        return self._audited("models.PullModel", state, params, body(), context)

    def _source_channel(self, request):
        if not request.source:
            raise RequestError(Status.INVALID_ARGUMENT, "PullModel needs the source node's address (host:port)")
        opts = [("grpc.max_receive_message_length", 64 << 20)]
        if not request.tls:
            return grpc.aio.insecure_channel(request.source, options=opts)
        tls = self.ctx.config.tls
        creds = channel_credentials(tls.client_ca, tls.cert, tls.key)
        return grpc.aio.secure_channel(request.source, creds, options=opts)

    async def DeleteModel(self, request, context):
        name = request.model
        try:
            mt.check_name(name)
            dep = self.ctx.deployments.get(name)
            if dep is not None and dep.active:
                raise RequestError(Status.FAILED_PRECONDITION,
                                   f"{shown(name)} is deployed; undeploy it before deleting it")
            freed = await asyncio.to_thread(mt.delete_model, self.root, name)
        except RequestError as exc:
            await self.ctx.record("models.DeleteModel", name, {}, "failed", exc.message)
            await abort(context, exc)
        await self.ctx.record("models.DeleteModel", name, {"freed_bytes": freed}, "ok")
        return models_pb2.DeleteModelResponse(freed_bytes=freed)


async def _data_chunks(request_iterator):
    async for msg in request_iterator:
        if not msg.HasField("data"):
            raise RequestError(Status.INVALID_ARGUMENT, "only the first ImportModel message may be a header")
        yield msg.data.path, msg.data.offset, msg.data.data


async def _pump(lane: mt.Lane, chunks, latest: dict) -> None:
    """Writes one stream's chunks through `lane` on a writer thread of its own, in order."""
    loop = asyncio.get_running_loop()
    pending: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-write") as writer:
        try:
            async for path, offset, data in chunks:
                pending.append(loop.run_in_executor(writer, lane.write, path, offset, data))
                latest["file"] = path
                while len(pending) > WRITES_IN_FLIGHT or (pending and pending[0].done()):
                    await pending.popleft()
            while pending:
                await pending.popleft()
        finally:   # a failed or cancelled stream: its queued writes end before its files close
            await asyncio.gather(*pending, return_exceptions=True)


async def _export_chunks(call, specs, request, paths: set[str]):
    try:
        async for msg in call:
            if msg.HasField("manifest"):
                if _specs(msg.manifest) != specs:
                    raise RequestError(Status.ABORTED, f"{shown(request.model)} changed on {request.source} during "
                                       "the pull; pull it again")
                continue
            if msg.data.path not in paths:
                raise RequestError(Status.FAILED_PRECONDITION, f"the source node {request.source} sent file "
                                   f"{shown(msg.data.path)} on a stream that asked for other files (a musad without "
                                   "ExportRequest.paths?); pull with models.pull_streams = 1 on this node")
            yield msg.data.path, msg.data.offset, msg.data.data
    except grpc.aio.AioRpcError as exc:
        raise _source_error(request, exc) from None


def _source_error(request, exc: grpc.aio.AioRpcError) -> RequestError:
    code = exc.code()
    status = {grpc.StatusCode.NOT_FOUND: Status.NOT_FOUND,
              grpc.StatusCode.UNAUTHENTICATED: Status.FAILED_PRECONDITION,
              grpc.StatusCode.PERMISSION_DENIED: Status.FAILED_PRECONDITION}.get(code, Status.UNAVAILABLE)
    return RequestError(status, f"the source node {request.source} refused or failed the export "
                        f"({code.name}): {exc.details()}; what arrived stays staged for a retry")
