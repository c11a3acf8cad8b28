"""What a render is asked to do, and what it reports: the request, the
preflight's count told before the first message, the finished run's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from promomail.pools import (
    DEFAULT_LEASE_SECONDS,
    InvalidSetting,
    LowStockAlert,
    RunTotals,
    id_problem,
    value_problem,
)
from promomail.templating.choices import CHUNK_SIZE, OnExhausted
from promomail.templating.mailing.options import (
    MAX_CHUNK_SIZE,
    check_range,
    check_seconds,
    check_workers,
)
from promomail.templating.mailing.outputs import OutputTarget
from promomail.templating.mailing.recipients import Duplicate, RecipientSlice, Shard


@dataclass(frozen=True)
class RenderRequest:
    template_path: str
    recipients_path: str
    mailing_id: str
    db_url: str
    output: OutputTarget
    on_exhausted: OnExhausted = OnExhausted.STOP
    workers: int = 1
    shard: Shard = field(default_factory=Shard)
    variables: dict[str, str] = field(default_factory=dict)
    chunk_size: int = CHUNK_SIZE
    #: How long the shard's lease lasts without renewal (a killed run blocks
    #: the next one at most this long).
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    #: How long to wait for a run of the same mailing and shard to end
    #: before refusing; 0 refuses at once.
    wait_seconds: float = 0.0
    #: Whether each worker's store work runs in a helper process of its own
    #: (:mod:`templating.mailing.store_helper`); None decides by the mailing's size.
    store_process: bool | None = None

    def __post_init__(self) -> None:
        if not self.mailing_id.strip():
            raise InvalidSetting("{mailing_id} must not be empty", "mailing_id")
        # The id goes into every message's headers: refused here, not by the
        # first message that cannot be written.
        problem = id_problem(self.mailing_id)
        if problem is not None:
            raise InvalidSetting(f"{{mailing_id}} {self.mailing_id!r}: {problem}", "mailing_id")
        check_workers(self.workers)
        check_range(self.chunk_size, "the chunk size", 1, MAX_CHUNK_SIZE)
        check_seconds(self.lease_seconds, "the lease", allow_zero=False)
        check_seconds(self.wait_seconds, "the wait for another run", allow_zero=True)
        if "client" in self.variables:
            raise InvalidSetting(
                "{variables} cannot name 'client': it would hide the recipient", "variables"
            )
        for name, value in self.variables.items():
            # In every message: refused once here rather than by each recipient.
            problem = value_problem(value)
            if problem is not None:
                raise InvalidSetting(f"{{variables}} {name}: the value {problem}", "variables")

    def slice_of(self, worker: int) -> RecipientSlice:
        """The recipients worker ``worker`` renders (the preflight checked the file)."""
        return RecipientSlice(
            self.recipients_path, self.shard, worker, self.workers, self.chunk_size
        )

    @property
    def scope(self) -> str:
        """Reservations of this mailing and shard, reclaimed by its next run."""
        return f"{self.mailing_id}|{self.shard.label}"


@dataclass(frozen=True)
class RenderCount:
    """What the preflight found, told before the first recipient renders."""

    #: Recipients this run renders (the shard's, when it renders one), each id once.
    recipients: int
    #: Of them, those earlier runs of the mailing already gave codes: a
    #: re-run renders their messages again with the same codes.
    served_before: int = 0


@dataclass
class RenderSummary:
    """A finished render: its totals, and what the front ends report with them.

    The counts, the failed and skipped recipients and the status are the
    run's :class:`RunTotals`, read as ``summary.totals``: one record of them,
    the same the run's stored record and every worker's share have.
    """

    mailing: str
    shard: str
    totals: RunTotals
    seconds: float
    output: str
    low_stock: list[LowStockAlert] = field(default_factory=list)
    #: The earlier run whose expired lease this run took over, described.
    took_over: str | None = None
    #: Ids the recipients file (this shard of it) holds more than once.
    duplicates: list[Duplicate] = field(default_factory=list)
    recipients_file: str = ""

    @property
    def rate(self) -> float:
        """Recipients rendered per second."""
        return self.totals.rendered / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.totals.status == "finished" and not self.totals.failures

    def as_dict(self) -> dict[str, Any]:
        totals = self.totals
        return {
            "mailing": self.mailing,
            "shard": self.shard,
            "status": totals.status,
            "output": self.output,
            "recipients": totals.recipients,
            "rendered": totals.rendered,
            "new_codes": totals.new_codes,
            "reused_codes": totals.reused_codes,
            "skipped": len(totals.skips),
            "failed": len(totals.failures),
            "seconds": round(self.seconds, 3),
            "recipients_per_second": round(self.rate, 1),
            "stopped_at_pool": totals.stopped_at_pool,
            "failures": [failure.as_dict() for failure in totals.failures],
            "skipped_recipients": [skip.as_dict() for skip in totals.skips],
            "duplicates": [duplicate.as_dict() for duplicate in self.duplicates],
            "low_stock": [alert.as_dict() for alert in self.low_stock],
        }
