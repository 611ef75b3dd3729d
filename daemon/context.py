"""DaemonContext: everything a servicer needs, built once by server.py and handed to each.

Servicers, interceptors and the shutdown path reach the node's parts only through this
object, so a test can build a server around real parts on a temp folder. Every part is
always present (the audit log included); only `auth`, the token store, is created later by
the security wiring (`trust.auth.security_interceptors`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .deployments import DeploymentManager
from .inference_core import InferenceCore
from .devices.base import Accelerator
from .metrics import DaemonMetrics
from .repository import ModelRepository
from .telemetry import TelemetrySampler
from .trust.audit import AuditLog
from .trust.tokens import TokenStore
from .usage import UsageLog


@dataclass
class DaemonContext:
    config: Config
    devices: Accelerator
    repository: ModelRepository
    deployments: DeploymentManager
    telemetry: TelemetrySampler
    metrics: DaemonMetrics
    audit: AuditLog
    auth: TokenStore | None = None  # set by trust.auth.security_interceptors
    hostname: str = ""
    started_at: float = field(default_factory=time.time)
    tls: bool = False               # the gRPC port serves TLS
    usage: UsageLog | None = None   # per-request usage rows (on the audit log's database)
    inference: InferenceCore | None = None   # the one inference path of gRPC and HTTP
    http: Any = None                # http.serve.HttpFrontDoor while server.http_listen serves
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    async def record(self, action: str, target: str = "", params: dict | None = None,
                     outcome: str = "ok", error: str = "") -> None:
        """Records a control action in the audit log."""
        await self.audit.record(action=action, target=target, params=params or {},
                                outcome=outcome, error=error)
