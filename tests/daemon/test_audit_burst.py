"""A burst of Audit.Query calls, some cancelled and some past their deadline, while records
are being written: every call ends with a status and the daemon logs no grpc traceback
(grpc used to log an ExecuteBatchError per call whose deadline passed mid-stream)."""

from __future__ import annotations

import asyncio
import logging

import grpc

from musaops.v1 import audit_pb2, audit_pb2_grpc


def test_query_burst_while_writing_logs_no_grpc_errors(make_daemon, caplog):
    caplog.set_level(logging.WARNING)
    d = make_daemon()

    written = 0

    async def writer(stop: asyncio.Event) -> None:
        nonlocal written
        i = 0
        while not stop.is_set():
            fut = asyncio.run_coroutine_threadsafe(d.ctx.audit.record("test.write", "t", {"i": i}, "ok", ""), d._loop)
            await asyncio.wrap_future(fut)
            i += 1
            written += 1

    async def run() -> list:
        stop = asyncio.Event()
        writers = [asyncio.create_task(writer(stop)) for _ in range(4)]
        # at least 0.3 s of writing, and records there to query however slow the machine
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() < start + 0.3 or not written:
            assert loop.time() < start + 30, "no audit record was written in 30 s"
            await asyncio.sleep(0.01)
        async with d.channel() as ch:
            stub = audit_pb2_grpc.AuditStub(ch)

            async def query(k: int):
                call = stub.Query(audit_pb2.AuditQuery(limit=3000, descending=bool(k % 2)),
                                  timeout=(None, 0.05, 2.0)[k % 3])
                n = 0
                try:
                    async for _ in call:
                        n += 1
                        if k % 5 == 0 and n == 3:
                            call.cancel()
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                except asyncio.CancelledError:
                    return grpc.StatusCode.CANCELLED
                return n

            results = await asyncio.gather(*(query(k) for k in range(240)))
        stop.set()
        await asyncio.gather(*writers)
        return results

    results = asyncio.run(run())
    assert any(isinstance(r, int) and r > 0 for r in results)
    grpc_errors = [r for r in caplog.records if r.name.startswith("grpc") and r.levelno >= logging.ERROR]
    assert not grpc_errors, grpc_errors[0].getMessage()
