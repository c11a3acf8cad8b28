"""Mailing records: what was rendered, by which runs, with which codes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, func, select, update

from promomail.pools.admin.lookup import unknown_mailing
from promomail.pools.after_sending.deliveries import DeliveryCounts, delivery_counts
from promomail.pools.errors import MailingNotFound
from promomail.pools.issuing.leases import Lease, ensure_held
from promomail.pools.issuing.mailing_status import RunState, mailing_status
from promomail.pools.store.clock import iso_seconds, utcnow
from promomail.pools.store.db import read_transaction, write_transaction
from promomail.pools.store.dialect_sql import insert_if_absent
from promomail.pools.store.models import Issuance, IssuanceKind, Mailing, MailingRun, Redemption
from promomail.pools.store.row_sets import one_of


class Failure(NamedTuple):
    """A recipient whose message failed."""

    recipient: str
    #: Where the recipient is in the recipients file.
    line: int
    reason: str
    #: The reason without what is this recipient's own (its line, its value):
    #: many failures of one kind are told as one count.
    kind: str

    def as_dict(self) -> dict[str, Any]:
        return {"recipient": self.recipient, "line": self.line, "reason": self.reason}


class Skip(NamedTuple):
    """A recipient left out because a pool ran out (``--on-exhausted skip``)."""

    recipient: str
    line: int
    reason: str

    @property
    def kind(self) -> str:
        return self.reason

    def as_dict(self) -> dict[str, Any]:
        return {"recipient": self.recipient, "line": self.line, "reason": self.reason}


@dataclass
class RunTotals:
    """What a render did: of one chunk, one worker, a whole run, or a stored run.

    One type at every level, added up with :meth:`add`, so a chunk's totals
    become a worker's and the workers' a run's without conversions. The
    counters are what a run's record stores; the lists name the recipients
    and are known only to the process that rendered them (a run read back
    from the store has the counts and empty lists).
    """

    recipients: int = 0
    rendered: int = 0
    failed: int = 0
    skipped: int = 0
    new_codes: int = 0
    reused_codes: int = 0
    failures: list[Failure] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    #: The pool that ran out and ended the render (policy ``stop``).
    stopped_at_pool: str | None = None
    #: Stopped before the end when asked to (a signal, a lost lease, a gone run).
    interrupted: bool = False

    def fail(self, recipient_id: str, line: int, reason: str, kind: str | None = None) -> None:
        """``kind``: the reason as every recipient failing alike has it (default: ``reason``)."""
        self.failures.append(Failure(recipient_id, line, reason, reason if kind is None else kind))
        self.failed += 1

    def skip(self, recipient_id: str, line: int, reason: str) -> None:
        self.skips.append(Skip(recipient_id, line, reason))
        self.skipped += 1

    def add(self, other: RunTotals) -> None:
        """Count ``other`` in (a chunk into its worker, a worker into its run)."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)
        self.skips.extend(other.skips)
        self.stopped_at_pool = self.stopped_at_pool or other.stopped_at_pool
        self.interrupted = self.interrupted or other.interrupted

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.stopped_at_pool:
            return "stopped"
        return "finished"


#: The counters of :class:`RunTotals`, the columns of a run's record.
COUNTERS = ("recipients", "rendered", "failed", "skipped", "new_codes", "reused_codes")


def start_run(
    engine: Engine,
    mailing_id: str,
    shard: str,
    template: str,
    recipients: str,
    lease: Lease | None = None,
) -> None:
    """Create the mailing (first run) and mark this shard's run as running.

    With the run's ``lease``, only while this run still holds it.
    """
    now = utcnow()
    with write_transaction(engine) as conn:
        if lease is not None:
            ensure_held(conn, lease)
        created = insert_if_absent(
            conn,
            Mailing,
            {
                "id": mailing_id,
                "template": template,
                "recipients_file": recipients,
                "started_at": now,
            },
        )
        if not created:
            # A cancelled mailing rendered again is live again.
            conn.execute(
                update(Mailing)
                .where(Mailing.id == mailing_id)
                .values(
                    template=template,
                    recipients_file=recipients,
                    finished_at=None,
                    cancelled_at=None,
                )
            )
        values: dict[str, Any] = {"status": "running", "started_at": now, "finished_at": None}
        if not insert_if_absent(
            conn, MailingRun, {"mailing_id": mailing_id, "shard": shard, **values}
        ):
            conn.execute(
                update(MailingRun)
                .where(MailingRun.mailing_id == mailing_id, MailingRun.shard == shard)
                .values(**values)
            )


def finish_run(
    engine: Engine,
    mailing_id: str,
    shard: str,
    status: str,
    totals: RunTotals,
    lease: Lease | None = None,
) -> None:
    """Record how the run ended; with its ``lease``, only if it still holds it.

    A run whose lease was taken over must not overwrite the record of the
    run that took over (it raises LeaseLost and changes nothing).
    """
    now = utcnow()
    with write_transaction(engine) as conn:
        if lease is not None:
            ensure_held(conn, lease)
        conn.execute(
            update(MailingRun)
            .where(MailingRun.mailing_id == mailing_id, MailingRun.shard == shard)
            .values(
                status=status,
                finished_at=now,
                **{name: getattr(totals, name) for name in COUNTERS},
            )
        )
        conn.execute(update(Mailing).where(Mailing.id == mailing_id).values(finished_at=now))


def issued_customers_in(
    conn: Connection, mailing_id: str, pool_id: str, customer_ids: Sequence[str]
) -> int:
    """How many of these customers this mailing already gave an initial code from the pool."""
    if not customer_ids:
        return 0
    query = select(func.count(func.distinct(Issuance.customer_id))).where(
        Issuance.mailing_id == mailing_id,
        Issuance.pool_id == pool_id,
        Issuance.kind == IssuanceKind.INITIAL,
        one_of(conn, Issuance.customer_id, customer_ids),
        # A returned code was never delivered: that recipient needs a new one.
        Issuance.returned_at.is_(None),
    )
    return int(conn.execute(query).scalar_one())


def served_customers_in(
    conn: Connection, mailing_id: str, pool_ids: Sequence[str], customer_ids: Sequence[str]
) -> int:
    """How many of these customers this mailing already gave an initial code from
    one of the pools (what an interrupted or earlier run of it left done)."""
    if not customer_ids or not pool_ids:
        return 0
    query = select(func.count(func.distinct(Issuance.customer_id))).where(
        Issuance.mailing_id == mailing_id,
        # Named pool by pool, so each customer is looked up in the mailing's
        # unique index (mailing, pool, customer) instead of scanning the mailing.
        Issuance.pool_id.in_(list(pool_ids)),
        one_of(conn, Issuance.customer_id, customer_ids),
        Issuance.kind == IssuanceKind.INITIAL,
        Issuance.returned_at.is_(None),
    )
    return int(conn.execute(query).scalar_one())


@dataclass
class MailingView:
    id: str
    template: str
    recipients_file: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    totals: RunTotals
    codes_issued: int
    reissues: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    #: What the status means for this mailing, in words (``partial: 1 of 2 shards rendered``).
    status_text: str = ""
    #: When ``mailing cancel`` gave its codes back.
    cancelled_at: datetime | None = None
    #: Codes this mailing issued that were redeemed (live redemptions attributed to it).
    redeemed: int = 0
    #: Issuances given back because the message was never delivered.
    returned: int = 0
    #: Its messages by delivery state (``send`` and the services' events).
    delivery: DeliveryCounts = field(default_factory=DeliveryCounts)

    @property
    def redemption_rate(self) -> float:
        """``redeemed`` / codes issued, from 0 to 1 (0 when nothing was issued)."""
        return self.redeemed / self.codes_issued if self.codes_issued else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "template": self.template,
            "recipients_file": self.recipients_file,
            "status": self.status,
            "status_text": self.status_text,
            "recipients": self.totals.recipients,
            "rendered": self.totals.rendered,
            "failed": self.totals.failed,
            "skipped": self.totals.skipped,
            "codes_issued": self.codes_issued,
            "reissues": self.reissues,
            "redeemed": self.redeemed,
            "redemption_rate": self.redemption_rate,
            "returned": self.returned,
            "delivery": self.delivery.as_dict(),
            "started_at": iso_seconds(self.started_at),
            "finished_at": iso_seconds(self.finished_at),
            "cancelled_at": iso_seconds(self.cancelled_at),
            "runs": self.runs,
        }


def _view(conn: Connection, mailing: Any, pools: Collection[str] | None = None) -> MailingView:
    """The mailing's record; with ``pools``, its code counts over those pools alone.

    A front-end user limited to some pools must not learn what the mailing
    did with the others: its issuances, redemptions and returns are counted
    over ``pools``, and the runs' code counters (over every pool the
    template drew from) are left out.
    """
    runs = conn.execute(
        select(MailingRun).where(MailingRun.mailing_id == mailing.id).order_by(MailingRun.shard)
    ).all()
    in_pools = [Issuance.pool_id.in_(pools)] if pools is not None else []
    # Live issuances only: a returned code was never delivered. The filter
    # also lets the (partial) mailing index serve the count.
    counts = dict(
        conn.execute(
            select(Issuance.kind, func.count())
            .where(Issuance.mailing_id == mailing.id, Issuance.returned_at.is_(None), *in_pools)
            .group_by(Issuance.kind)
        ).all()
    )
    returned = conn.execute(
        select(func.count()).where(
            Issuance.mailing_id == mailing.id,
            Issuance.kind == IssuanceKind.INITIAL,
            Issuance.returned_at.is_not(None),
            *in_pools,
        )
    ).scalar_one()
    # Counted from the redemptions attributed to the mailing: each names the
    # issuance (code, customer) it credits, and a redeemed code is never
    # returned, so these issuances are all live.
    credited = (
        select(Redemption.code_id, Redemption.issued_to)
        .where(
            Redemption.mailing_id == mailing.id,
            Redemption.rolled_back_at.is_(None),
            *([Redemption.pool_id.in_(pools)] if pools is not None else []),
        )
        .distinct()
        .subquery()
    )
    redeemed = conn.execute(select(func.count()).select_from(credited)).scalar_one()
    totals = RunTotals(**{name: sum(getattr(r, name) for r in runs) for name in COUNTERS})
    status = mailing_status([RunState(r.shard, r.status) for r in runs], mailing.cancelled_at)
    return MailingView(
        mailing.id,
        mailing.template,
        mailing.recipients_file,
        mailing.started_at,
        mailing.finished_at,
        status.state,
        totals,
        int(counts.get(IssuanceKind.INITIAL, 0)),
        int(counts.get(IssuanceKind.REISSUE, 0)),
        [
            {
                "shard": r.shard,
                "status": r.status,
                "recipients": r.recipients,
                "rendered": r.rendered,
                "failed": r.failed,
                "skipped": r.skipped,
                "new_codes": r.new_codes if pools is None else None,
                "reused_codes": r.reused_codes if pools is None else None,
                "started_at": iso_seconds(r.started_at),
                "finished_at": iso_seconds(r.finished_at),
            }
            for r in runs
        ],
        redeemed=int(redeemed),
        returned=int(returned),
        delivery=delivery_counts(conn, mailing.id),
        status_text=status.text,
        cancelled_at=mailing.cancelled_at,
    )


def _of_pools(pools: Collection[str]) -> Any:
    """Mailings that issued a code (live or returned) from any of ``pools``."""
    return Mailing.id.in_(select(Issuance.mailing_id).where(Issuance.pool_id.in_(pools)).distinct())


def list_mailings(engine: Engine, *, pools: Collection[str] | None = None) -> list[MailingView]:
    """Every mailing; with ``pools``, those that issued from them, counted over them alone."""
    query = select(Mailing).order_by(Mailing.started_at, Mailing.id)
    if pools is not None:
        query = query.where(_of_pools(pools))
    with read_transaction(engine) as conn:
        return [_view(conn, row, pools) for row in conn.execute(query).all()]


def show_mailing(
    engine: Engine, mailing_id: str, *, pools: Collection[str] | None = None
) -> MailingView:
    """One mailing; with ``pools``, as :func:`list_mailings` shows it (unknown when it
    issued nothing from them: a user limited to pools cannot tell it from one that
    does not exist)."""
    query = select(Mailing).where(Mailing.id == mailing_id)
    if pools is not None:
        query = query.where(_of_pools(pools))
    with read_transaction(engine) as conn:
        row = conn.execute(query).first()
        if row is None:
            # Suggestions only to a view of the whole store.
            raise (
                MailingNotFound(mailing_id)
                if pools is not None
                else unknown_mailing(conn, mailing_id)
            )
        return _view(conn, row, pools)
