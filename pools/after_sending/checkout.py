"""What a code must pass at checkout, read once for a redemption and for a hold.

A redemption (:mod:`pools.after_sending.redemption`) and a checkout hold
(:mod:`pools.after_sending.holds`) ask the same questions of a code in the
same transaction: does it exist (in the pool named), is it live, can it be
redeemed now, does another order hold it, was it issued as its pool
requires. They are answered here once, so a hold is refused for exactly the
reasons a redemption would be, in the same words.

A real redemption or hold locks the code's row first (``SELECT … FOR
UPDATE`` on PostgreSQL; SQLite serialises writers with ``BEGIN IMMEDIATE``),
so everything read after the lock stays true until the transaction ends;
the writes themselves are conditional updates of that row, so the rules
hold even for a writer that read before another one committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select

from promomail.pools.admin.lookup import unknown_pool
from promomail.pools.errors import did_you_mean
from promomail.pools.store.models import Code, CodeStatus, Issuance, IssuanceKind, Pool, PoolStatus

UNKNOWN_CODE = "unknown code"
ALREADY_REDEEMED = "already redeemed"
VOID_CODE = "void code"
NEVER_ISSUED = "never issued"
#: A redemption or hold by any order but the holder's, while a hold lasts.
HELD_ELSEWHERE = "held by another order until"


def held_elsewhere_reason(until: datetime) -> str:
    """The refusal while another order holds the code; seconds count for a 30 s hold."""
    return f"{HELD_ELSEWHERE} {until:%Y-%m-%d %H:%M:%S} UTC"


@dataclass(frozen=True)
class Candidate:
    """A code row with what its pool says about it, as a checkout reads it."""

    id: int
    pool_id: str
    status: str
    available_from: datetime | None
    available_till: datetime | None
    redemptions: int
    hold_order: str | None
    hold_until: datetime | None
    pool_status: str
    multi_use: bool
    once_per_customer: bool
    require_issued: bool
    issued_valid_days: int | None

    def live_hold(self, now: datetime) -> tuple[str, datetime] | None:
        """(order, until) of the hold that counts now; a hold past its time counts for nothing."""
        if self.hold_order is None or self.hold_until is None or self.hold_until <= now:
            return None
        return self.hold_order, self.hold_until


@dataclass(frozen=True)
class Holder:
    """The customer a code was issued to, by which mailing, when."""

    customer: str
    mailing: str
    issued_at: datetime


def find_codes(conn: Connection, code: str, pool_id: str | None, *, lock: bool) -> list[Candidate]:
    """Every code with this exact string (in ``pool_id`` when given), pools in id order."""
    query = _FIND_CODES[pool_id is not None, lock]
    return [Candidate(*row) for row in conn.execute(query, {"code": code, "pool_id": pool_id})]


def _find_codes_query(in_pool: bool, lock: bool) -> Any:
    query: Any = (
        select(
            Code.id,
            Code.pool_id,
            Code.status,
            Code.available_from,
            Code.available_till,
            Code.redemptions,
            Code.hold_order,
            Code.hold_until,
            Pool.status,
            Pool.multi_use,
            Pool.once_per_customer,
            Pool.require_issued,
            Pool.issued_valid_days,
        )
        .join(Pool, Pool.id == Code.pool_id)
        .where(Code.code == bindparam("code"))
        .order_by(Code.pool_id)
    )
    if in_pool:
        query = query.where(Code.pool_id == bindparam("pool_id"))
    if lock:
        # Racing redeemers, holders and roll-backs of one code queue here;
        # SQLite ignores it, its writers being serialised already.
        query = query.with_for_update(of=Code)
    return query


# Every checkout runs these: built once, each is a compiled-cache hit (building
# a statement costs a request more than the database's work on it).
_FIND_CODES = {
    (in_pool, lock): _find_codes_query(in_pool, lock)
    for in_pool in (False, True)
    for lock in (False, True)
}


def not_found_reason(conn: Connection, pool_id: str | None) -> str:
    """Why no code was found: the pool named does not exist, or the code is not in it."""
    if pool_id is None:
        return UNKNOWN_CODE
    if conn.execute(select(Pool.id).where(Pool.id == pool_id)).first():
        return f"{UNKNOWN_CODE} in pool {pool_id!r}"
    guess = did_you_mean(unknown_pool(conn, pool_id).suggestions)
    return f"unknown pool {pool_id!r}{guess}"


def one_code(conn: Connection, code: str, pool_id: str | None, *, lock: bool) -> Candidate | str:
    """The one code a checkout names, or the reason it names none or several."""
    candidates = find_codes(conn, code, pool_id, lock=lock)
    if not candidates:
        return not_found_reason(conn, pool_id)
    if len(candidates) > 1:
        pools = ", ".join(c.pool_id for c in candidates)
        return f"ambiguous code: it is in pools {pools}; name the pool"
    return candidates[0]


def code_refusal(found: Candidate, now: datetime) -> str | None:
    """Why the code cannot be redeemed, judging by the code and pool rows alone."""
    if found.status == CodeStatus.VOID:
        return VOID_CODE
    if found.pool_status == PoolStatus.DRAFT:
        return f"pool {found.pool_id!r} is not active yet"
    if not found.multi_use and found.redemptions > 0:
        return ALREADY_REDEEMED
    if found.available_from is not None and now < found.available_from:
        return f"not valid yet: valid from {found.available_from:%Y-%m-%d %H:%M} UTC"
    if found.available_till is not None and now >= found.available_till:
        return f"expired: valid until {found.available_till:%Y-%m-%d %H:%M} UTC"
    return None


def hold_refusal(found: Candidate, order: str | None, now: datetime) -> str | None:
    """Why ``order`` may not redeem or hold the code: another order holds it now.

    No order at all is "another order" too: a checkout that names none
    cannot be the holder.
    """
    current = found.live_hold(now)
    if current is None or (order is not None and current[0] == order):
        return None
    return held_elsewhere_reason(current[1])


def holder_of(conn: Connection, found: Candidate, customer: str | None) -> Holder | None:
    """Whom the code was issued to, as its checkout sees it.

    A shared code may have been sent to millions: only ``customer``'s
    issuance of it is looked up (none without a customer).
    """
    if not found.multi_use:
        return live_holder(conn, found.id)
    return live_holder(conn, found.id, (customer, found.pool_id)) if customer is not None else None


def issue_refusal(found: Candidate, holder: Holder | None, now: datetime) -> str | None:
    """Why the code's issuance (``holder``, or its absence) refuses it.

    ``--require-issued`` pools take only codes issued to someone, within
    ``--issued-valid-days`` of that issue.
    """
    if not found.require_issued:
        return None
    if holder is None:
        return NEVER_ISSUED
    if found.issued_valid_days is not None:
        valid_until = holder.issued_at + timedelta(days=found.issued_valid_days)
        if now >= valid_until:
            return (
                f"issued on {holder.issued_at:%Y-%m-%d} and valid for "
                f"{found.issued_valid_days} days, until {valid_until:%Y-%m-%d %H:%M} UTC"
            )
    return None


def live_holder(
    conn: Connection, code_id: int, customer: tuple[str, str] | None = None
) -> Holder | None:
    """The code's earliest live initial issuance (to (customer, pool), when given)."""
    if customer is None:
        row = conn.execute(_LIVE_HOLDER, {"code_id": code_id}).first()
    else:
        parameters = {"code_id": code_id, "customer": customer[0], "pool_id": customer[1]}
        row = conn.execute(_LIVE_HOLDER_OF_CUSTOMER, parameters).first()
    return Holder(row[0], row[1], row[2]) if row is not None else None


def live_issuance(*, of_customer: bool) -> Select[str, str, datetime]:
    """The code's earliest live initial issuance (to a customer, in a pool, if ``of_customer``).

    Parameters ``code_id`` (and ``customer``, ``pool_id``). The customer's
    pool is named so the (customer, pool) index serves the look-up rather
    than the code's index, which lists everyone a shared code was sent to.
    """
    query = (
        select(Issuance.customer_id, Issuance.mailing_id, Issuance.issued_at)
        .where(
            Issuance.code_id == bindparam("code_id"),
            Issuance.kind == IssuanceKind.INITIAL,
            Issuance.returned_at.is_(None),
        )
        .order_by(Issuance.issued_at, Issuance.id)
        .limit(1)
    )
    if of_customer:
        query = query.where(
            Issuance.customer_id == bindparam("customer"),
            Issuance.pool_id == bindparam("pool_id"),
        )
    return query


_LIVE_HOLDER = live_issuance(of_customer=False)
_LIVE_HOLDER_OF_CUSTOMER = live_issuance(of_customer=True)


def lost_race_reason(conn: Connection, code_id: int, now: datetime) -> str:
    """Why a conditional write found the code no longer as it was read.

    Another writer committed in between (a redemption, a hold, a void):
    the code's row as it is now says which.
    """
    row = conn.execute(
        select(Code.status, Code.redemptions, Code.hold_until).where(Code.id == code_id)
    ).one()
    if row.status == CodeStatus.VOID:
        return VOID_CODE
    if row.redemptions > 0:
        return ALREADY_REDEEMED
    if row.hold_until is not None and row.hold_until > now:
        return held_elsewhere_reason(row.hold_until)
    return ALREADY_REDEEMED
