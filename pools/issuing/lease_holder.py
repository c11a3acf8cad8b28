"""Who holds (or held) a lease: a plain value, shown in errors and kept by leases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds (or held) a shard's lease, as shown to the people waiting for it."""

    host: str
    pid: int
    started_at: datetime
    expires_at: datetime

    def describe(self) -> str:
        return (
            f"pid {self.pid} on host {self.host}, started "
            f"{self.started_at.isoformat(sep=' ', timespec='seconds')} UTC"
        )
