"""API keys and their usage as the console keeps them (Keys / KeyUsage answers), and the
sums the "Keys & usage" view draws: tokens per hour stacked by key or model, the top keys,
fleet totals, CSV rows. Pure data, no Qt, no wire types (app/services/keys_feed.py converts).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, fields
from typing import Iterable, Sequence

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class KeyLimits:
    """keys.proto KeyLimits: zero is no limit, no models is every model (a unit test holds
    the field list equal to the proto's)."""

    models: tuple[str, ...] = ()
    rpm: int = 0
    tpm: int = 0
    concurrent: int = 0
    daily_tokens: int = 0

    def describe(self) -> str:
        """`models a,b · 60 rpm · 1,000 tpm` (only what is limited), or `no limits`."""
        parts = [f"models {','.join(self.models)}"] if self.models else []
        parts += [f"{getattr(self, f):,} {label}" for f, label in LIMIT_LABELS if getattr(self, f)]
        return " · ".join(parts) or "no limits"


LIMIT_LABELS = (("rpm", "rpm"), ("tpm", "tpm"), ("concurrent", "at once"), ("daily_tokens", "tokens/day"))
LIMIT_FIELDS = tuple(f.name for f in fields(KeyLimits))


@dataclass(frozen=True)
class KeyEntry:
    node_id: str
    name: str
    role: str
    state: str                    # active, expired or revoked
    created_ms: int = 0
    expires_ms: int = 0           # 0 = never
    last_used_ms: int = 0         # 0 = never
    limits: KeyLimits = field(default_factory=KeyLimits)


@dataclass(frozen=True)
class UsageBucket:
    """One key x model x hour on one node."""

    node_id: str
    hour_ms: int
    key: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    rate_limited: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class KeyTotals:
    key: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int
    rate_limited: int
    nodes: int                    # how many nodes the key was used on

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def hourly(buckets: Iterable[UsageBucket], since_ms: int, until_ms: int, by: str = "key",
           ) -> tuple[list[int], dict[str, list[int]]]:
    """(hour starts, {key or model: tokens per hour}) over [since, until), every hour present
    (empty ones are 0), summed across nodes; series in descending total order."""
    start = since_ms - since_ms % HOUR_MS
    hours = list(range(start, until_ms, HOUR_MS))
    index = {h: i for i, h in enumerate(hours)}
    series: dict[str, list[int]] = {}
    for b in buckets:
        i = index.get(b.hour_ms)
        if i is None:
            continue
        name = b.key if by == "key" else b.model
        series.setdefault(name, [0] * len(hours))[i] += b.tokens
    return hours, dict(sorted(series.items(), key=lambda kv: (-sum(kv[1]), kv[0])))


def top_keys(buckets: Iterable[UsageBucket], limit: int = 20) -> list[KeyTotals]:
    """Keys by tokens used (most first), summed across models, hours and nodes."""
    acc: dict[str, list[int]] = {}
    nodes: dict[str, set[str]] = {}
    for b in buckets:
        a = acc.setdefault(b.key, [0, 0, 0, 0, 0])
        a[0] += b.requests
        a[1] += b.prompt_tokens
        a[2] += b.completion_tokens
        a[3] += b.errors
        a[4] += b.rate_limited
        nodes.setdefault(b.key, set()).add(b.node_id)
    rows = [KeyTotals(k, *v, nodes=len(nodes[k])) for k, v in acc.items()]
    rows.sort(key=lambda r: (-r.tokens, -r.requests, r.key))
    return rows[:limit]


def totals(buckets: Iterable[UsageBucket]) -> dict[str, int]:
    """Requests, tokens, errors and rate-limited requests of all buckets (the fleet's when
    the buckets come from every node)."""
    t = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "errors": 0, "rate_limited": 0}
    for b in buckets:
        for k in t:
            t[k] += getattr(b, k)
    return t


CSV_COLUMNS = ("node", "hour_utc", "key", "model", "requests", "prompt_tokens", "completion_tokens",
               "errors", "rate_limited")


def usage_csv(buckets: Sequence[UsageBucket], label: dict[str, str] | None = None) -> str:
    """The buckets as CSV (one row each, node by its label, hour in ISO 8601 UTC)."""
    from datetime import datetime, timezone

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for b in sorted(buckets, key=lambda b: (b.hour_ms, b.node_id, b.key, b.model)):
        hour = datetime.fromtimestamp(b.hour_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:00:00Z")
        w.writerow(((label or {}).get(b.node_id, b.node_id), hour, b.key, b.model, b.requests,
                    b.prompt_tokens, b.completion_tokens, b.errors, b.rate_limited))
    return out.getvalue()
