"""Telemetry service: Stream sends a backfill from the history ring, then live snapshots.

Every subscriber shares the one sampler (daemon/telemetry.py). Snapshots are serialised
once by the sampler; this servicer registers Stream with a pass-through serializer and
yields those bytes, so 100 subscribers cost 100 socket writes, not 100 encodings.
"""

from __future__ import annotations

import grpc

from musaops.v1 import telemetry_pb2

from ..context import DaemonContext

MIN_INTERVAL_MS, MAX_INTERVAL_MS, DEFAULT_INTERVAL_MS = 100, 60_000, 1000
MAX_STREAMS = 1024  # open streams per node; each costs a queue and a hand-off per tick
STREAM_METHOD = "/musaops.v1.Telemetry/Stream"
# Appended to a serialised Snapshot it sets `backfill` (protobuf merges concatenated messages),
# so a long backfill costs no decoding or re-encoding on the event loop.
_BACKFILL_FLAG = telemetry_pb2.Snapshot(backfill=True).SerializeToString()


class TelemetryServicer:
    def __init__(self, ctx: DaemonContext):
        self.ctx = ctx

    async def Stream(self, request: telemetry_pb2.StreamRequest, context):
        interval_ms = request.interval_ms or DEFAULT_INTERVAL_MS
        if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"interval_ms {interval_ms} is outside {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS} ms.")
        sampler = self.ctx.telemetry
        if sampler.subscriber_count >= MAX_STREAMS:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"This node already serves {MAX_STREAMS} telemetry streams, its limit; "
                                "close unused ones (a console needs one per node) and retry in a few seconds.")
        sub = sampler.subscribe(interval_ms / 1000.0)
        try:
            for pub in sampler.backfill(request.backfill_seconds):
                yield pub.data + _BACKFILL_FLAG
            while True:
                pub = await sub.next_snapshot()
                if pub is None:  # the daemon is shutting down: end the stream cleanly
                    return
                yield pub.data
        finally:
            sampler.unsubscribe(sub)


def add_to_server(servicer: TelemetryServicer, server: grpc.aio.Server) -> None:
    """Like the generated add_TelemetryServicer_to_server, but responses are pre-encoded bytes."""
    handler = grpc.unary_stream_rpc_method_handler(
        servicer.Stream,
        request_deserializer=telemetry_pb2.StreamRequest.FromString,
        response_serializer=bytes,
    )
    handlers = {"Stream": handler}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("musaops.v1.Telemetry", handlers),))
    server.add_registered_method_handlers("musaops.v1.Telemetry", handlers)
