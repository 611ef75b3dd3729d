"""LLMEngine: the step loop on its own thread, bridged to asyncio per request.

Requests enter from the event loop (`generate`), are tokenised there, and are handed to the
engine thread through a locked inbox. The engine thread schedules, runs one forward over
the whole batch, samples, detokenises and pushes TextDelta / GenerationResult items back
into each request's asyncio.Queue: gathered per event loop and handed over with one
`loop.call_soon_threadsafe` per loop per step (each call writes to the loop's self-pipe; at
256 streams on the demo model, one call per token spent 0.29 s of a 2.3 s run in those
writes). A step that raises fails only the requests in that step, and a row the sampler
cannot sample fails only its own request; the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator

import torch

from .api import (CLIENT_STOPPED_READING, EngineClosedError, EngineInfo, EngineSpec, EngineStats, FinishReason,
                  GenerationRequest, GenerationResult, InvalidRequestError, QueueFullError,
                  RequestMetrics, RequestObserver, TextDelta)
from .blocks import BlockAllocator
from .kv_cache import KVCache
from .model import CausalLM
from .runner import ModelRunner
from .sampling import RowFailure, StopMatcher, make_generator, sample
from .scheduler import ScheduledChunk, Scheduler, Sequence, SeqStatus
from . import workers
from .tokenizer import IncrementalDetokenizer, Tokenizer

log = logging.getLogger(__name__)


def release_host_memory() -> None:
    """Hand freed heap pages back to the OS (the CPU's counterpart of `empty_cache`): glibc
    keeps a freed block of up to 32 MiB on its heap once its mmap threshold has grown, so an
    undeployed model's KV cache could stay in the daemon's RSS. No-op without glibc."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass(eq=False)
class _Sink:
    """Per-request state the engine thread keeps beside the Sequence."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    detok: IncrementalDetokenizer
    stop: StopMatcher
    gen: torch.Generator | None
    text: str = ""
    emitted: int = 0
    emitted_tokens: int = 0
    taken_tokens: int = 0   # of those, taken by the consumer (written on the event loop)
    scheduled_at: float | None = None
    token_times: list[float] = field(default_factory=list)


# A generous bound on the characters one token can cover: a prompt longer than
# max_context * this cannot fit and is refused before it is tokenised.
MAX_CHARS_PER_TOKEN = 64


class LLMEngine:
    """A loaded model serving requests with continuous batching (see docs/architecture.md)."""

    def __init__(self, model: CausalLM, tokenizer: Tokenizer, cache: KVCache, spec: EngineSpec,
                 device: torch.device, info: EngineInfo, observer: RequestObserver | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.cache = cache
        self.spec = spec
        self.device = device
        self.info = info
        self.observer = observer
        self.eos = frozenset(info.eos_token_ids)
        self.allocator = BlockAllocator(cache.num_blocks, prefix_caching=spec.prefix_caching)
        self.scheduler = Scheduler(self.allocator, cache.block_size, spec.max_batch,
                                   spec.prefill_token_budget)
        self.runner = ModelRunner(model, cache, device)
        self._lock = threading.Lock()
        self._inbox: deque[Sequence] = deque()
        self._preparing = 0   # requests being tokenised (event loop only): they count as waiting
        self._aborts: deque[Sequence] = deque()
        self._live: set[Sequence] = set()   # admitted, not finished (engine thread only)
        # Items for the event loops since the last _flush (engine thread only).
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, object]]] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._draining = False
        self._cancel_all = False
        # Counters: written on the engine thread only, read anywhere (plain ints).
        self._running = self._waiting = self._blocks_used = 0
        self._prompt_total = self._gen_total = self._req_total = self._req_failed = 0
        self._cancelled_total = 0
        self._steps = 0
        self._thread = threading.Thread(target=self._loop, name="musad-engine", daemon=True)
        self._thread.start()

    # ---- any thread -------------------------------------------------------------------

    def _queued(self) -> int:
        """Requests admitted and not yet running (the scheduler's and the inbox's)."""
        return self._waiting + len(self._inbox)

    def stats(self) -> EngineStats:
        return EngineStats(
            running=self._running, waiting=self._queued(),
            kv_blocks_used=self._blocks_used, kv_blocks_total=self.cache.num_blocks,
            prompt_tokens_total=self._prompt_total, generation_tokens_total=self._gen_total,
            requests_total=self._req_total, requests_failed=self._req_failed,
            preemptions_total=self.scheduler.preemptions, steps_total=self._steps,
            prefix_cache_hit_tokens_total=self.scheduler.prefix_hit_tokens)

    def _abort(self, seq: Sequence) -> None:
        with self._lock:
            self._aborts.append(seq)
        self._wake.set()

    # ---- event loop ---------------------------------------------------------------------

    def tokenize(self, req: GenerationRequest) -> list[int]:
        if req.messages:
            prompt = self.tokenizer.apply_chat_template(
                list(req.messages), max_chars=self.info.max_context * MAX_CHARS_PER_TOKEN,
                timeout_s=self.spec.template_timeout_s)
            ids = self.tokenizer.encode(prompt, add_special=False)
            if self.tokenizer.add_bos and self.tokenizer.bos_token and not prompt.startswith(self.tokenizer.bos_token):
                bos = self.tokenizer.token_id(self.tokenizer.bos_token)
                ids = ([bos] if bos is not None else []) + ids
        else:
            if not req.prompt:
                raise InvalidRequestError("the prompt is empty; send a prompt or chat messages")
            ids = self.tokenizer.encode(req.prompt)
        if not ids:
            raise InvalidRequestError("the prompt is empty after tokenisation")
        return ids

    async def generate(self, req: GenerationRequest) -> AsyncIterator[TextDelta | GenerationResult]:
        """Stream TextDelta items, then one GenerationResult. Errors raise before the first item."""
        if self._stopping or self._draining:
            raise EngineClosedError("this model is being undeployed and takes no new requests")
        sp = req.sampling
        if sp.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be at least 1 (got {sp.max_tokens})")
        limit = self.info.max_context
        chars = len(req.prompt or "") + sum(len(role) + len(text) for role, text in req.messages)
        if chars > limit * MAX_CHARS_PER_TOKEN:
            raise InvalidRequestError(
                f"the prompt is {chars:,} characters; this deployment's context is {limit:,} tokens, "
                f"which holds at most {limit * MAX_CHARS_PER_TOKEN:,} characters")
        # Tokenising (and rendering the chat template) of a long prompt takes seconds: keep it
        # off the event loop, and off the loop's default executor (token checks, database
        # reads), on the pool for callers' CPU work (workers.py).
        if self._queued() + self._preparing >= self.spec.max_queue:
            raise QueueFullError(f"{self.spec.max_queue} requests are already waiting")
        self._preparing += 1
        try:
            ids = await workers.run(self.tokenize, req)
        finally:
            self._preparing -= 1
        if self._stopping or self._draining:  # undeployed while we tokenised
            raise EngineClosedError("this model is being undeployed and takes no new requests")
        if len(ids) >= limit:
            raise InvalidRequestError(
                f"the prompt is {len(ids)} tokens; this deployment's context is {limit} tokens "
                "and leaves no room for output")
        loop = asyncio.get_running_loop()
        rid = req.request_id or uuid.uuid4().hex
        seq = Sequence(request_id=rid, prompt_ids=ids, sampling=sp,
                       max_tokens=min(sp.max_tokens, limit - len(ids)),
                       cache_scope=hashlib.sha256(req.cache_scope.encode()).digest() if req.cache_scope else b"")
        seq.sink = _Sink(loop=loop, queue=asyncio.Queue(), detok=IncrementalDetokenizer(self.tokenizer, ids),
                         stop=StopMatcher(sp.stop), gen=make_generator(sp, self.device))
        with self._lock:
            self._inbox.append(seq)
        self._wake.set()
        done = False
        queue = seq.sink.queue
        after: GenerationResult | None = None   # taken from the queue behind a merged delta
        try:
            while True:
                item = after or await queue.get()
                after = None
                # A consumer that falls behind (a slow client, a busy event loop) finds several
                # deltas waiting: it gets them as one, so under load a stream sends fewer,
                # larger messages instead of queueing latency. Keeping up, it gets every token.
                while isinstance(item, TextDelta) and not queue.empty():
                    nxt = queue.get_nowait()
                    if isinstance(nxt, TextDelta):
                        item = TextDelta(text=item.text + nxt.text, tokens=item.tokens + nxt.tokens,
                                         prompt_tokens=item.prompt_tokens)
                    else:
                        after = nxt
                        break
                if isinstance(item, GenerationResult):
                    done = True
                else:
                    seq.sink.taken_tokens += item.tokens
                yield item
                if done:
                    return
        finally:
            if not done:
                self._abort(seq)

    async def drain(self, timeout_s: float) -> tuple[int, int]:
        """Stop admitting; wait up to timeout_s for in-flight requests; cancel the rest.
        Returns (finished normally meanwhile, cancelled)."""
        self._draining = True
        drained = False
        try:
            done0, cancelled0 = self._req_total, self._cancelled_total
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self._busy():
                await asyncio.sleep(0.02)
            if self._busy():
                self._cancel_all = True
                self._wake.set()
                while self._busy() and self._thread.is_alive():
                    await asyncio.sleep(0.01)
            drained = True
            cancelled = self._cancelled_total - cancelled0
            return self._req_total - done0 - cancelled, cancelled
        finally:
            if not drained and not self._stopping:
                # Cancelled (or failed) midway: the model stays deployed, so it admits again.
                self._draining = False

    def _busy(self) -> bool:
        return bool(self._running or self._waiting or self._inbox)

    def close(self) -> None:
        """Stop the step thread (cancelling what is left) and free the device memory."""
        self._draining = True
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=60)
        del self.runner
        self.model = None  # type: ignore[assignment]
        self.cache = _ClosedCache(self.cache.num_blocks)  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "musa":
            torch.musa.empty_cache()  # type: ignore[attr-defined]
        else:
            release_host_memory()

    # ---- engine thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            self._take_inbox()
            self._flush()
            if not self.scheduler.has_work():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                chunks = self.scheduler.schedule()
            except Exception as exc:  # a scheduler bug must not kill the engine thread
                log.exception("scheduling failed")
                for seq in list(self._live):
                    self._finish(seq, FinishReason.ERROR, error=f"scheduling failed: {exc}")
                self._flush()
                continue
            if not chunks:
                self._wake.wait(0.01)
                self._wake.clear()
                continue
            self._step(chunks)
            self._flush()
        # Shutting down: cancel everything left.
        self._take_inbox()
        for seq in list(self._live):
            self._finish(seq, FinishReason.CANCELLED)
        self._update_gauges()
        self._flush()

    def _take_inbox(self) -> None:
        with self._lock:
            new = list(self._inbox)
            self._inbox.clear()
            aborts = list(self._aborts)
            self._aborts.clear()
        for seq in new:
            self._live.add(seq)
            self.scheduler.add(seq)
        for seq in aborts:
            if seq in self._live:
                self._finish(seq, FinishReason.CANCELLED)
        if self._cancel_all:
            self._cancel_all = False
            for seq in list(self._live):
                self._finish(seq, FinishReason.CANCELLED)
        self._update_gauges()

    def _update_gauges(self) -> None:
        self._running = len(self.scheduler.running)
        self._waiting = len(self.scheduler.waiting)
        self._blocks_used = self.allocator.num_used

    def _step(self, chunks: list[ScheduledChunk]) -> None:
        now = time.monotonic()
        for c in chunks:
            if c.seq.sink.scheduled_at is None:
                c.seq.sink.scheduled_at = now
        sampling = [c for c in chunks if c.samples]
        try:
            logits = self.runner.run(chunks)
            tokens = sample(logits, [c.seq.sampling for c in sampling], [c.seq.prompt_ids for c in sampling],
                            [c.seq.output_ids for c in sampling], [c.seq.sink.gen for c in sampling])
        except Exception as exc:  # a failed step fails its requests, not the engine
            log.exception("engine step failed")
            for c in chunks:
                if c.seq.status is not SeqStatus.FINISHED:
                    self._finish(c.seq, FinishReason.ERROR, error=f"engine step failed: {exc}")
            self._update_gauges()
            return
        self._steps += 1
        now = time.monotonic()
        for c in chunks:
            self.scheduler.computed(c.seq, c.start + c.length)
        for c, tok in zip(sampling, tokens):
            if c.seq.status is SeqStatus.FINISHED:
                continue
            if isinstance(tok, RowFailure):   # this request only; the rest of the step goes on
                self._finish(c.seq, FinishReason.ERROR, error=tok.reason)
            else:
                self._on_token(c.seq, tok, now)
        self._update_gauges()

    def _emit(self, seq: Sequence, item: TextDelta | GenerationResult) -> None:
        sink = seq.sink
        self._outbox.setdefault(sink.loop, []).append((sink.queue, item))

    def _flush(self) -> None:
        """Hand what was emitted since the last flush to the event loops, in order: one
        wake-up per loop, not one per token."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the event loop is gone; nobody is listening
                pass

    def _on_token(self, seq: Sequence, tok: int, now: float) -> None:
        sink = seq.sink
        seq.output_ids.append(tok)
        sink.token_times.append(now)
        self._gen_total += 1
        is_eos = tok in self.eos and not seq.sampling.ignore_eos
        if not is_eos:
            sink.text += sink.detok.add(tok)
        end, matched = sink.stop.check(sink.text, sink.emitted)
        if matched:
            self._send_text(seq, end)
            self._finish(seq, FinishReason.STOP, stop=matched)
            return
        if is_eos or len(seq.output_ids) >= seq.max_tokens:
            sink.text += sink.detok.flush()
            end, matched = sink.stop.check(sink.text, sink.emitted)
            self._send_text(seq, end if matched else len(sink.text))
            reason = FinishReason.STOP if (is_eos or matched) else FinishReason.LENGTH
            self._finish(seq, reason, stop=matched)
            return
        self._send_text(seq, end)
        unread = sink.emitted_tokens - sink.taken_tokens
        if unread > self.spec.stream_backlog_tokens:   # it stops being scheduled; its blocks are freed
            self._finish(seq, FinishReason.ERROR, error=f"{CLIENT_STOPPED_READING}: {unread} generated tokens were "
                         f"left unread (engine.stream_backlog_tokens is {self.spec.stream_backlog_tokens})")

    def _send_text(self, seq: Sequence, end: int) -> None:
        sink = seq.sink
        tokens = len(seq.output_ids) - sink.emitted_tokens
        if end > sink.emitted:
            self._emit(seq, TextDelta(text=sink.text[sink.emitted:end], tokens=tokens,
                                      prompt_tokens=len(seq.prompt_ids)))
            sink.emitted = end
            sink.emitted_tokens = len(seq.output_ids)

    def _finish(self, seq: Sequence, reason: FinishReason, error: str = "", stop: str = "") -> None:
        if seq.status is SeqStatus.FINISHED:
            return
        self.scheduler.remove(seq)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        self._live.discard(seq)
        sink = seq.sink
        end = time.monotonic()
        times = sink.token_times
        itl = tuple(b - a for a, b in zip(times, times[1:]))
        metrics = RequestMetrics(
            request_id=seq.request_id, prompt_tokens=len(seq.prompt_ids),
            completion_tokens=len(seq.output_ids),
            queue_s=((sink.scheduled_at or end) - seq.arrival),
            ttft_s=(times[0] - seq.arrival) if times else 0.0,
            mean_itl_s=(sum(itl) / len(itl)) if itl else 0.0, itl_s=itl,
            total_s=end - seq.arrival, finish_reason=reason)
        self._req_total += 1
        self._prompt_total += len(seq.prompt_ids)
        if reason is FinishReason.ERROR:
            self._req_failed += 1
        elif reason is FinishReason.CANCELLED:
            self._cancelled_total += 1
        self._update_gauges()  # before the result reaches the caller
        self._emit(seq, GenerationResult(finish_reason=reason, metrics=metrics, error=error, stop=stop))
        if self.observer is not None:
            try:
                self.observer(metrics)
            except Exception:  # an observer bug must not stop the engine
                log.exception("request observer failed")


def _deliver(items: list[tuple[asyncio.Queue, object]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)


class _ClosedCache:
    """Stands in for the freed cache after close() so stats() still answers."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
