"""Health that reflects a jammed daemon.

Every `interval_s` the watchdog (a task on the event loop) hands a no-op to each thread pool
the daemon depends on: the loop's default executor (token checks, database reads, model
scans) and the pool for callers' CPU work (engine/workers.py). A pool whose probe has not
run after `stall_s`, or a loop that wakes `stall_s` late, marks every health service
NOT_SERVING (with a warning in the log) until probes run again. A load balancer or the
console then stops sending work to a node that could not answer it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Callable

from grpc_health.v1 import health_pb2

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, health, names: list[str], pools: dict[str, Callable[[], Executor | None]],  # noqa: ANN001
                 interval_s: float = 1.0, stall_s: float = 10.0) -> None:
        self.health = health
        self.names = list(names)
        self.pools = pools          # name -> the executor (None: the loop's default one)
        self.interval_s = interval_s
        self.stall_s = stall_s
        self.jammed = ""            # what is stuck, "" when all is well
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="musad-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        probes: dict[str, tuple[asyncio.Future, float]] = {}
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            stuck = []
            if now - before - self.interval_s > self.stall_s:
                stuck.append(f"the event loop woke {now - before - self.interval_s:.0f} s late")
            for name, get in self.pools.items():
                probe = probes.get(name)
                if probe is not None and not probe[0].done():
                    if now - probe[1] > self.stall_s:
                        stuck.append(f"the {name} threads ran nothing for {now - probe[1]:.0f} s")
                    continue
                probes[name] = (loop.run_in_executor(get(), _nothing), now)
            await self._set(", ".join(stuck))

    async def _set(self, jammed: str) -> None:
        if jammed == self.jammed or (jammed and self.jammed):
            self.jammed = jammed
            return
        if jammed:
            log.warning("health NOT_SERVING: %s", jammed)
        else:
            log.warning("health SERVING again: %s is moving", self.jammed)
        self.jammed = jammed
        status = (health_pb2.HealthCheckResponse.NOT_SERVING if jammed
                  else health_pb2.HealthCheckResponse.SERVING)
        for name in self.names:
            await self.health.set(name, status)


def _nothing() -> None:
    return None
