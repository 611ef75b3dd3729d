"""Moving models into and between node repositories, as the console sees it (Qt-free).

One TransferEvent per progress step of an import, a node-to-node pull or a delete; the last
one of an operation has `done` set, and `ok` says how it ended (`message` says why not).
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("import", "pull", "delete", "space")
STAGES = ("hashing", "receiving", "verifying", "done", "failed", "cancelled")


@dataclass(frozen=True)
class TransferEvent:
    op_id: str
    node_id: str               # the node whose repository changes (the target)
    model: str
    kind: str                  # KINDS; "space" answers a free-space query (free_bytes)
    stage: str                 # STAGES
    bytes_done: int = 0
    bytes_total: int = 0
    rate_bytes_per_s: float = 0.0
    message: str = ""
    done: bool = False
    ok: bool = False
    free_bytes: int = 0        # kind "space": free disk of the node's repository
    source_node_id: str = ""   # kind "pull": where the bytes come from

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate; None while there is no rate yet."""
        if self.rate_bytes_per_s <= 0 or self.bytes_total <= self.bytes_done:
            return None
        return (self.bytes_total - self.bytes_done) / self.rate_bytes_per_s
