"""Reminder segments: the customers still holding a code they can use, and when it expires.

A customer holds a *live* code from a pool when the code issued to them (an
initial issuance, not returned) can still be redeemed by them now: not
redeemed (a single-use code by anyone, a multi-use code by them), not void,
not past its ``available_till``, and, in ``require_issued`` pools with a
validity period, issued recently enough. These are the rules a redemption
checks, and the rules of a per-customer pool's current codes
(:mod:`pools.issuing.per_customer`).

Which of a customer's codes counts: the one a follow-up mailing shows them.
``client.last_promocode`` shows a customer's most recent live initial
issuance from the pool, so that code alone decides. A customer who redeemed
their newest code is not reminded of an older one (the reminder would show
them the code they already used), and one whose newest code expires in a
month is not in a "expiring this week" segment because of an older code the
reminder would not show. In per-customer pools every live code counts:
``client.promocodes`` shows them all.

A code's expiry, for its customer, is the earlier of its ``available_till``
and, with a validity period, its issue time plus that period: the moment
from which a redemption is refused. ``expiring_within`` keeps the codes whose
expiry falls after now and no later than now plus the duration; a code that
never expires never falls in that window.

Every comparison uses one ``now`` (the store's clock: naive UTC), turned
into constants before the query runs, so the query needs no date arithmetic
of either database and every index on a time column serves it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, Connection, Select, and_, exists, or_, select
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from promomail.pools.admin.lookup import unknown_pool
from promomail.pools.errors import SegmentError
from promomail.pools.identifiers import EXPIRY_WINDOW
from promomail.pools.store.models import Code, CodeStatus, Issuance, IssuanceKind, Pool, Redemption

_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
#: Longer than any code's life a reminder could be about; keeps now + duration a valid time.
MAX_EXPIRING_WITHIN = timedelta(days=3660)


def parse_expiring_within(text: str) -> timedelta:
    """``36h``, ``7d`` or ``2w``: whole hours, days or weeks, more than none, at most ten years.

    A unit is required (a bare number could mean anything), and there is no
    ``m``, which reads as minutes to some and months to others.
    """
    match = EXPIRY_WINDOW.fullmatch(text.strip())
    if match is None:
        raise SegmentError(
            f"{text!r} is not an expiry window: a whole number of hours, days or weeks, "
            "e.g. 36h, 7d, 2w"
        )
    duration = int(match[1]) * _UNITS[match[2]]
    if not timedelta(0) < duration <= MAX_EXPIRING_WITHIN:
        raise SegmentError(
            f"{text!r} is not an expiry window: more than nothing and at most "
            f"{MAX_EXPIRING_WITHIN.days} days"
        )
    return duration


@dataclass(frozen=True)
class PoolRules:
    """What decides whether a pool's code is still usable, read once per segment."""

    id: str
    multi_use: bool
    per_customer: bool
    #: The validity period of an issued code (``require_issued`` pools that set one).
    valid_for: timedelta | None


def pool_rules(conn: Connection, pool_ids: Sequence[str]) -> list[PoolRules]:
    """The rules of each pool named, in order; PoolNotFound for the first unknown one."""
    rows = {
        row.id: row
        for row in conn.execute(
            select(
                Pool.id,
                Pool.multi_use,
                Pool.per_customer,
                Pool.require_issued,
                Pool.issued_valid_days,
            ).where(Pool.id.in_(pool_ids))
        )
    }
    rules = []
    for pool_id in pool_ids:
        row = rows.get(pool_id)
        if row is None:
            raise unknown_pool(conn, pool_id)
        days = row.issued_valid_days if row.require_issued else None
        rules.append(
            PoolRules(
                id=pool_id,
                multi_use=bool(row.multi_use),
                per_customer=row.per_customer is not None,
                valid_for=timedelta(days=days) if days is not None else None,
            )
        )
    return rules


def holders_query(
    rules: Sequence[PoolRules],
    now: datetime,
    expiring_within: timedelta | None,
    *,
    after: str | None = None,
    customers: Collection[str] | BindParameter[Any] | None = None,
    ordered: bool = False,
) -> Select[Any]:
    """The ids of customers holding a live code from one of the pools.

    Each id once and sorted when ``ordered``; otherwise a subquery for
    ``IN``, its issuances aliased so that it never correlates with an outer
    query on issuances. ``after`` keeps ids after that one (keyset paging),
    ``customers`` those ids alone (a slice of a recipients file, or an expanding
    parameter bound to each slice).
    """
    held = aliased(Issuance, name="held")
    deadline = now + expiring_within if expiring_within is not None else None
    query = (
        select(held.customer_id)
        .join(Code, Code.id == held.code_id)
        .where(
            held.pool_id.in_([rule.id for rule in rules]),
            held.kind == IssuanceKind.INITIAL,
            held.returned_at.is_(None),
            Code.status != CodeStatus.VOID,
            or_(*(_live_in(held, rule, now, deadline) for rule in rules)),
        )
    )
    if after is not None:
        query = query.where(held.customer_id > after)
    if customers is not None:
        query = query.where(held.customer_id.in_(customers))
    if ordered:
        query = query.group_by(held.customer_id).order_by(held.customer_id)
    return query


def _live_in(
    held: Any, rule: PoolRules, now: datetime, deadline: datetime | None
) -> ColumnElement[bool]:
    """The issuance is of ``rule``'s pool and its code is live (and expires by ``deadline``)."""
    till = Code.available_till
    conditions: list[ColumnElement[bool]] = [
        held.pool_id == rule.id,
        or_(till.is_(None), till > now),
    ]
    if rule.valid_for is not None:
        conditions.append(held.issued_at > now - rule.valid_for)
    if deadline is not None:
        # The earlier of the two ends must fall by the deadline; both are after now.
        ends_soon = [till <= deadline]
        if rule.valid_for is not None:
            ends_soon.append(held.issued_at <= deadline - rule.valid_for)
        conditions.append(or_(*ends_soon))
    if rule.multi_use:
        # Served by the index on redeemed_by: a shared code may have millions of redemptions.
        conditions.append(
            ~exists().where(
                Redemption.redeemed_by == held.customer_id,
                Redemption.code_id == held.code_id,
                Redemption.rolled_back_at.is_(None),
            )
        )
    else:
        conditions.append(Code.redemptions == 0)
    if not rule.per_customer:
        conditions.append(~_newer_code_exists(held))
    return and_(*conditions)


def _newer_code_exists(held: Any) -> ColumnElement[bool]:
    """The customer got a live code from the pool after this one: last_promocode shows that one.

    Ties on the issue time go to the later record, as last_promocode orders them.
    """
    later = aliased(Issuance, name="later")
    return exists().where(
        later.customer_id == held.customer_id,
        later.pool_id == held.pool_id,
        later.kind == IssuanceKind.INITIAL,
        later.returned_at.is_(None),
        or_(
            later.issued_at > held.issued_at,
            and_(later.issued_at == held.issued_at, later.id > held.id),
        ),
    )
