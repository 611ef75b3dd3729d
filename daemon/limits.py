"""Per-key limits: which models a key may use, requests and tokens per minute, requests at
once, and tokens per day. Checked by the inference core before a request reaches an engine.

`KeyLimits` is what a token carries (stored with it, trust/tokens.py). `Limiter` holds the
moving state per key in memory: a sliding window of request starts and of finished
requests' tokens (prompt + completion) over `window_s` (60 s), a count of requests in
flight, and the day's tokens, loaded once per key and day from the usage store so a
restart does not give a key its quota back. That load runs on a worker thread
(`load_day`, awaited before `admit`): a key with a busy day costs a long sum, which must
not stall the event loop. Tokens are counted when a request finishes
(the completion's length is not known before), so a key may pass its TPM or daily quota
by at most the requests it had in flight when it crossed it.

Both clocks are injectable: `clock` (monotonic seconds, the windows) and `wall` (epoch
seconds, the UTC day of the quota).
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from dataclasses import dataclass, field, fields
from typing import Callable

WINDOW_S = 60.0
DAY_S = 86400
LIMIT_FIELDS = ("rpm", "tpm", "concurrent", "daily_tokens")   # 0 = no limit
MAX_LIMIT = 2**31 - 1
MAX_DAILY_TOKENS = 2**53


@dataclass(frozen=True)
class KeyLimits:
    """What one key may do. Zero means no limit; no models means every model."""

    models: tuple[str, ...] = ()
    rpm: int = 0             # requests per minute
    tpm: int = 0             # prompt + completion tokens per minute
    concurrent: int = 0      # requests in flight at once
    daily_tokens: int = 0    # prompt + completion tokens per UTC day

    def allows_model(self, model: str) -> bool:
        return not self.models or model in self.models

    @property
    def unlimited(self) -> bool:
        return not self.models and not any(getattr(self, f) for f in LIMIT_FIELDS)

    def check(self) -> None:
        """Raises ValueError with a sentence when a value is out of range."""
        for f in LIMIT_FIELDS:
            v, most = getattr(self, f), MAX_DAILY_TOKENS if f == "daily_tokens" else MAX_LIMIT
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= most:
                raise ValueError(f"{f} must be a whole number from 0 (no limit) to {most}; got {v!r}")
        for m in self.models:
            if not m or len(m) > 256:
                raise ValueError(f"allowed model names must be 1-256 characters; got {m!r}")

    def as_dict(self) -> dict:
        return {f.name: (list(self.models) if f.name == "models" else getattr(self, f.name))
                for f in fields(self)}


NO_LIMITS = KeyLimits()


class LimitExceeded(Exception):
    """A limit refused the request. `code` is the OpenAI error code (rate_limit_exceeded or
    insufficient_quota), `retry_after_s` when trying again may succeed."""

    def __init__(self, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = max(1, int(retry_after_s))


@dataclass
class _KeyState:
    starts: collections.deque = field(default_factory=collections.deque)   # monotonic start times
    tokens: collections.deque = field(default_factory=collections.deque)   # (time, tokens) finished
    window_tokens: int = 0
    in_flight: int = 0
    day: int = -1           # UTC day number of day_tokens
    day_tokens: int = 0
    loading: asyncio.Future | None = None   # the store read of `loading_day`'s tokens, while it runs
    loading_day: int = -1


class Ticket:
    """One admitted request; `finish(tokens)` exactly once, whatever happened."""

    __slots__ = ("_limiter", "key", "_done")

    def __init__(self, limiter: "Limiter", key: str) -> None:
        self._limiter, self.key, self._done = limiter, key, False

    def finish(self, tokens: int) -> None:
        if not self._done:
            self._done = True
            self._limiter._finish(self.key, tokens)


class Limiter:
    """The moving state of every key's limits. Event-loop only (no locks)."""

    def __init__(self, day_tokens: Callable[[str, int], int] = lambda key, day_start_s: 0, *,
                 window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._day_tokens = day_tokens   # (key, day start epoch s) -> tokens already used that day
        self.window_s = window_s
        self.clock = clock
        self.wall = wall
        self._keys: dict[str, _KeyState] = {}

    def _state(self, key: str) -> _KeyState:
        st = self._keys.get(key)
        if st is None:
            st = self._keys[key] = _KeyState()
        return st

    def _trim(self, st: _KeyState, now: float) -> None:
        edge = now - self.window_s
        while st.starts and st.starts[0] <= edge:
            st.starts.popleft()
        while st.tokens and st.tokens[0][0] <= edge:
            st.window_tokens -= st.tokens.popleft()[1]

    def _roll_day(self, key: str, st: _KeyState) -> int:
        wall = self.wall()
        day = int(wall // DAY_S)
        if st.day != day:   # not loaded by load_day (the day rolled since, or a caller without it)
            st.day, st.day_tokens = day, int(self._day_tokens(key, day * DAY_S))
        return int((day + 1) * DAY_S - wall)   # seconds to the next UTC midnight

    async def load_day(self, key: str, limits: KeyLimits) -> None:
        """Reads the key's tokens of the current UTC day from the store on a worker thread,
        once per key and day (concurrent requests share one read); `admit` then finds them
        loaded. A failed read raises here and is tried again by the next request."""
        if not limits.daily_tokens:
            return
        st = self._state(key)
        day = int(self.wall() // DAY_S)
        if st.day == day:
            return
        if st.loading is None or st.loading_day != day:
            st.loading_day = day
            st.loading = asyncio.ensure_future(asyncio.to_thread(self._day_tokens, key, day * DAY_S))
        loading = st.loading
        try:
            tokens = await asyncio.shield(loading)
        finally:
            if st.loading is loading and loading.done():
                st.loading = None
        if st.day != day:
            st.day, st.day_tokens = day, int(tokens)

    def admit(self, key: str, limits: KeyLimits) -> Ticket:
        """Counts a request in, or raises LimitExceeded (nothing counted then)."""
        st = self._state(key)
        now = self.clock()
        self._trim(st, now)
        if limits.daily_tokens:
            to_midnight = self._roll_day(key, st)
            if st.day_tokens >= limits.daily_tokens:
                raise LimitExceeded(
                    "insufficient_quota",
                    f"Key {key!r} has used its daily quota of {limits.daily_tokens:,} tokens "
                    f"({st.day_tokens:,} used today); it renews at 00:00 UTC.", to_midnight)
        if limits.concurrent and st.in_flight >= limits.concurrent:
            raise LimitExceeded(
                "rate_limit_exceeded",
                f"Key {key!r} has {st.in_flight} requests in flight, its limit; "
                "retry when one has finished.", 1)
        if limits.rpm and len(st.starts) >= limits.rpm:
            wait = st.starts[len(st.starts) - limits.rpm] + self.window_s - now
            raise LimitExceeded(
                "rate_limit_exceeded",
                f"Key {key!r} is limited to {limits.rpm} requests per minute; "
                f"retry after {math.ceil(wait)} s.", math.ceil(wait))
        if limits.tpm and st.window_tokens >= limits.tpm:
            wait, left = self.window_s, st.window_tokens
            for t, n in st.tokens:   # the window drops below the limit when enough have aged out
                left -= n
                if left < limits.tpm:
                    wait = t + self.window_s - now
                    break
            raise LimitExceeded(
                "rate_limit_exceeded",
                f"Key {key!r} is limited to {limits.tpm:,} tokens per minute and used "
                f"{st.window_tokens:,}; retry after {math.ceil(wait)} s.", math.ceil(wait))
        st.starts.append(now)
        st.in_flight += 1
        return Ticket(self, key)

    def _finish(self, key: str, tokens: int) -> None:
        st = self._state(key)
        st.in_flight -= 1
        if tokens > 0:
            now = self.clock()
            st.tokens.append((now, tokens))
            st.window_tokens += tokens
            if st.day >= 0:
                if st.day == int(self.wall() // DAY_S):
                    st.day_tokens += tokens
                else:
                    st.day = -1   # the day rolled while it ran: reload from the store

    def in_flight(self, key: str) -> int:
        st = self._keys.get(key)
        return st.in_flight if st else 0
