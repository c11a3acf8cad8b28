"""Pool counts, derived from the codes themselves so they always add up.

``total = available + pending + reserved + issued + expired + void``, where
``pending`` codes are not yet inside their issue window and ``reserved``
ones are held by a render in progress (stored as ``issued`` under the token
of a reservation that is still open, see ``pools.store.models.HeldCodes``).
``redeemed`` is a subset of ``issued`` (or, for multi-use pools, of
``available``): codes redeemed at least once. ``redemptions`` counts every
live redemption, so a shared code redeemed five times is 1 ``redeemed`` and
5 ``redemptions``. A code returned by a mailing that was never delivered is
``available`` again. ``held`` counts codes under a live checkout hold (see
:mod:`pools.after_sending.holds`): a hold moves no other count, so it stands
apart from the sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, case, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from promomail.pools.store.clock import utcnow
from promomail.pools.store.models import Code, CodeStatus, HeldCodes

#: The states every code is in exactly one of: they add up to ``total``.
PARTS = ("available", "pending", "reserved", "issued", "expired", "void")
#: Counts of codes already counted in a part (``redeemed``, ``held``) or of
#: events (``redemptions``): shown after the parts, never added to them.
ALSO = ("redeemed", "redemptions", "held")
#: The identity the counts keep, as people read it.
COUNTS_IDENTITY = "total = " + " + ".join(PARTS)


@dataclass(frozen=True)
class PoolCounts:
    total: int = 0
    available: int = 0
    pending: int = 0
    reserved: int = 0
    issued: int = 0
    redeemed: int = 0
    expired: int = 0
    void: int = 0
    #: Every live redemption (multi-use codes count each one).
    redemptions: int = 0
    #: Codes a checkout holds now (a hold past its time no longer counts).
    held: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def shown(self) -> list[tuple[str, int]]:
        """Every count in the order people read them: ``total``, the parts that
        add up to it, then ``redeemed``, ``redemptions`` and ``held``."""
        return [(name, getattr(self, name)) for name in ("total", *PARTS, *ALSO)]

    def __add__(self, other: PoolCounts) -> PoolCounts:
        """The counts of two disjoint sets of codes taken together."""
        return PoolCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def issuable_now(now: datetime) -> ColumnElement[bool]:
    """The claim condition: available, inside the issue window, not expired."""
    return and_(
        Code.status == CodeStatus.AVAILABLE,
        Code.issuable_until > now,
        or_(Code.issue_start.is_(None), Code.issue_start <= now),
    )


def held_now() -> ColumnElement[bool]:
    """Reserved: issued under the token of a reservation not settled or freed yet.

    ``held_codes`` has a row per open chunk of a render, a handful at a
    time, so the test is a look-up in a small hashed set.
    """
    return and_(
        Code.status == CodeStatus.ISSUED,
        Code.reserved_token.in_(select(HeldCodes.token)),
    )


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def pool_counts(
    conn: Connection,
    pool_ids: list[str] | None = None,
    now: datetime | None = None,
    *,
    batch_ids: Sequence[int] | None = None,
) -> dict[str, PoolCounts]:
    """Counts per pool id; pools without codes are absent from the answer.

    ``batch_ids`` counts only the codes of those import batches, through the
    batch index: what an upload added, without reading the whole pool again.
    """
    now = now or utcnow()
    available_status = Code.status == CodeStatus.AVAILABLE
    query = select(
        Code.pool_id,
        func.count(),
        _count_where(issuable_now(now)),
        _count_where(and_(available_status, Code.issuable_until > now, Code.issue_start > now)),
        _count_where(held_now()),
        # Issued or reserved; the reserved ones are taken off below.
        _count_where(Code.status == CodeStatus.ISSUED),
        _count_where(Code.redemptions > 0),
        _count_where(and_(available_status, Code.issuable_until <= now)),
        _count_where(Code.status == CodeStatus.VOID),
        func.coalesce(func.sum(Code.redemptions), 0),
        _count_where(Code.hold_until > now),
    ).group_by(Code.pool_id)
    if pool_ids is not None:
        query = query.where(Code.pool_id.in_(pool_ids))
    if batch_ids is not None:
        query = query.where(Code.batch_id.in_(batch_ids))
    answer = {}
    for row in conn.execute(query):
        counts = [int(value) for value in row[1:]]
        counts[4] -= counts[3]
        answer[row[0]] = PoolCounts(*counts)
    return answer


def available_count(conn: Connection, pool_id: str, now: datetime | None = None) -> int:
    """Codes that can be issued now; uses the claim index, no full scan."""
    now = now or utcnow()
    query = select(func.count()).where(Code.pool_id == pool_id, issuable_now(now))
    return int(conn.execute(query).scalar_one())
