"""DaemonContext: everything a servicer needs, built once by server.py and handed to each.

Servicers, interceptors and the shutdown path reach the node's parts only through this
object, so a test can build a server around real parts on a temp folder.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .deployments import DeploymentManager
from .metrics import DaemonMetrics
from .repository import ModelRepository
from .telemetry import TelemetrySampler


@dataclass
class DaemonContext:
    config: Config
    devices: Any                    # devices.Accelerator
    repository: ModelRepository
    deployments: DeploymentManager
    telemetry: TelemetrySampler
    metrics: DaemonMetrics
    audit: Any = None               # audit.AuditLog, or None when the audit module is absent
    auth: Any = None                # auth token store (set by the security wiring)
    hostname: str = ""
    started_at: float = field(default_factory=time.time)
    tls: bool = False               # the gRPC port serves TLS
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    async def record(self, action: str, target: str = "", params: dict | None = None,
                     outcome: str = "ok", error: str = "") -> None:
        """Records a control action in the audit log (a no-op without one)."""
        if self.audit is not None:
            await self.audit.record(action=action, target=target, params=params or {},
                                    outcome=outcome, error=error)
