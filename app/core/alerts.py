"""Alert rules: node offline, device unhealthy, too hot or memory too full, deploy failed,
a deployed model FAILED or restarted after a crash, error rate up.

Qt-free: the main window feeds it statuses, snapshots and deploy events and shows what it
returns. An alert is keyed so that a condition that persists stays one alert, and it is
resolved (removed) when the condition clears.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .nodes import UNUSABLE, ConnectionState, NodeStatus
from .operations import DeployEvent, ModelEntry
from .samples import Snapshot


@dataclass(frozen=True)
class AlertThresholds:
    temperature_celsius: float = 85.0
    memory_percent: float = 95.0
    error_rate_percent: float = 5.0   # failed / finished requests over the last interval
    offline_grace_seconds: float = 5.0


@dataclass(frozen=True)
class Alert:
    key: str                # stable identity: (node, kind, subject)
    node_id: str
    node_label: str
    kind: str               # offline, unhealthy, temperature, memory, deploy_failed, model_failed,
                            # model_restarted, error_rate
    severity: str           # warning, critical
    message: str
    since: float            # Unix seconds


class AlertEngine:
    """Keeps the set of open alerts up to date."""

    def __init__(self, thresholds: AlertThresholds | None = None) -> None:
        self.thresholds = thresholds or AlertThresholds()
        self._open: dict[str, Alert] = {}
        self._labels: dict[str, str] = {}
        self._offline_since: dict[str, float] = {}
        self._last_counts: dict[tuple[str, str], tuple[int, int]] = {}
        self._last_restarts: dict[tuple[str, str], int] = {}

    @property
    def alerts(self) -> list[Alert]:
        return sorted(self._open.values(), key=lambda a: a.since, reverse=True)

    def forget_node(self, node_id: str) -> bool:
        keys = [k for k, a in self._open.items() if a.node_id == node_id]
        for k in keys:
            del self._open[k]
        self._offline_since.pop(node_id, None)
        for k in [k for k in self._last_restarts if k[0] == node_id]:
            del self._last_restarts[k]
        return bool(keys)

    def dismiss(self, key: str) -> bool:
        return self._open.pop(key, None) is not None

    # Each update returns True when the set of open alerts changed.

    def on_status(self, status: NodeStatus, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        self._labels[status.node_id] = status.address.label
        key = f"{status.node_id}/offline"
        if status.state in UNUSABLE:
            since = self._offline_since.setdefault(status.node_id, now)
            # A node that was never seen alerts at once; one that was, after a grace period.
            if status.last_seen and now - since < self.thresholds.offline_grace_seconds:
                return False
            msg = f"{status.address.label} is {status.state.value}: {status.last_error or 'no answer'}"
            return self._raise(Alert(key, status.node_id, status.address.label, "offline",
                                     "critical", msg, since))
        self._offline_since.pop(status.node_id, None)
        if status.state is ConnectionState.ONLINE:
            return self._clear(key)
        return False

    def tick(self, statuses: list[NodeStatus], now: float | None = None) -> bool:
        """Re-checks grace periods (call about once a second)."""
        changed = False
        for s in statuses:
            if s.state in UNUSABLE:
                changed |= self.on_status(s, now)
        return changed

    def on_snapshot(self, node_id: str, snap: Snapshot) -> bool:
        if snap.backfill:
            return False
        th = self.thresholds
        label = self._labels.get(node_id, node_id)
        now = snap.time_unix_ms / 1000.0
        changed = False
        for d in snap.devices:
            key = f"{node_id}/temperature/{d.index}"
            t = d.temperature_celsius
            if t is not None and t >= th.temperature_celsius:
                changed |= self._raise(Alert(
                    key, node_id, label, "temperature", "critical",
                    f"{label} GPU {d.index} at {t:.0f} °C (threshold {th.temperature_celsius:.0f} °C)",
                    now))
            else:
                changed |= self._clear(key)
            key = f"{node_id}/unhealthy/{d.index}"
            if d.unhealthy:
                changed |= self._raise(Alert(
                    key, node_id, label, "unhealthy", "critical",
                    f"{label} GPU {d.index} is unhealthy: {d.health_reason or 'the daemon gave no reason'}",
                    now))
            else:
                changed |= self._clear(key)
            key = f"{node_id}/memory/{d.index}"
            m = d.memory_percent
            if m is not None and m >= th.memory_percent:
                changed |= self._raise(Alert(
                    key, node_id, label, "memory", "warning",
                    f"{label} GPU {d.index} memory {m:.0f}% full (threshold {th.memory_percent:.0f}%)",
                    now))
            else:
                changed |= self._clear(key)
        for m in snap.models:
            prev = self._last_counts.get((node_id, m.model))
            self._last_counts[(node_id, m.model)] = (m.requests_total, m.requests_failed)
            if prev is None:
                continue
            done, failed = m.requests_total - prev[0], m.requests_failed - prev[1]
            key = f"{node_id}/error_rate/{m.model}"
            if done > 0 and failed > 0 and 100.0 * failed / done >= th.error_rate_percent:
                changed |= self._raise(Alert(
                    key, node_id, label, "error_rate", "warning",
                    f"{label} {m.model}: {failed} of {done} requests failed "
                    f"({100.0 * failed / done:.0f}%)", now))
            elif done > 0:
                changed |= self._clear(key)
        return changed

    def on_models(self, node_id: str, models: tuple[ModelEntry, ...], now: float | None = None) -> bool:
        """A node's repository answer: a model FAILED (e.g. its engine's child crashed while
        READY) raises a critical alert until it leaves FAILED; a supervised engine restarted
        after a crash since the last answer raises a warning (open until dismissed)."""
        now = time.time() if now is None else now
        label = self._labels.get(node_id, node_id)
        changed = False
        for m in models:
            key = f"{node_id}/model_failed/{m.name}"
            if m.state == "failed" and f"{node_id}/deploy_failed/{m.name}" not in self._open:
                changed |= self._raise(Alert(key, node_id, label, "model_failed", "critical",
                                             f"{m.name} on {label} failed: {m.reason or 'no reason given'}", now))
            elif m.state != "failed":
                changed |= self._clear(key)
            d = m.deployment
            restarts = d.restarts if d is not None else 0
            prev = self._last_restarts.get((node_id, m.name))
            self._last_restarts[(node_id, m.name)] = restarts
            if prev is not None and restarts > prev:
                allowed = f" of {d.max_restarts} allowed" if d.max_restarts else ""
                changed |= self._raise(Alert(f"{node_id}/model_restarted/{m.name}", node_id, label,
                                             "model_restarted", "warning",
                                             f"{m.name} on {label} crashed and was restarted "
                                             f"({restarts}{allowed})", now))
        return changed

    def on_deploy_event(self, event: DeployEvent, now: float | None = None) -> bool:
        if not event.done:
            return False
        label = self._labels.get(event.node_id, event.node_id)
        key = f"{event.node_id}/deploy_failed/{event.model}"
        if event.ok or event.stage == "cancelled":  # an operator's cancel is not a failure
            return self._clear(key)
        return self._raise(Alert(key, event.node_id, label, "deploy_failed", "critical",
                                 f"Deploy of {event.model} on {label} failed: {event.message}",
                                 time.time() if now is None else now))

    def _raise(self, alert: Alert) -> bool:
        old = self._open.get(alert.key)
        if old is not None:
            if old.message == alert.message:
                return False
            alert = Alert(alert.key, alert.node_id, alert.node_label, alert.kind,
                          alert.severity, alert.message, old.since)
        self._open[alert.key] = alert
        return True

    def _clear(self, key: str) -> bool:
        return self._open.pop(key, None) is not None
