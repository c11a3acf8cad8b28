"""Redeeming codes at checkout, with attribution to the customer they were issued to.

The one rule that must hold under any concurrency, "a single-use code is
redeemed once", lives in the database: the redemption is a conditional
``UPDATE … WHERE redemptions = 0`` and only the writer whose update touched
the row wins. Everything else (windows, ``--require-issued`` validity, void
codes) is checked first, in the same transaction, and a refusal writes
nothing at all.

Decisions beyond the specification:

* Draft pools are not live yet: their codes are refused. Archived pools stop
  issuing, but codes already in customers' hands stay redeemable.
* ``available_from`` is inclusive and ``available_till`` exclusive, as the
  import stores them (a date-only ``available_till`` means "through that
  day"). The ``--issued-valid-days`` period runs from the code's initial
  issuance; showing the code again (a reissue) does not extend it.
* A single-use code redeemed before it was ever issued (a pool without
  ``--require-issued``, the code handed out some other way) leaves the pool:
  it becomes ``issued`` so no mailing sends it afterwards. A render holding
  it in a reservation then fails to settle that chunk and takes other codes,
  exactly as when the code is voided.
* Multi-use codes are issued to many customers: ``issued_to`` names the
  redeeming customer when the code was issued to them, and is empty
  otherwise. ``redeemed_at`` on the code keeps the first redemption.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from pools.clock import to_utc_naive, utcnow
from pools.db import write_transaction
from pools.models import Code, CodeStatus, Issuance, IssuanceKind, Pool, PoolStatus, Redemption

UNKNOWN_CODE = "unknown code"
ALREADY_REDEEMED = "already redeemed"
VOID_CODE = "void code"
NEVER_ISSUED = "never issued"


@dataclass(frozen=True)
class RedemptionResult:
    """The answer to a checkout: accepted (with attribution) or refused (with a reason)."""

    ok: bool
    code: str
    pool: str | None = None
    issued_to: str | None = None
    redeemed_by: str | None = None
    order: str | None = None
    reason: str | None = None
    #: How many times the code has now been redeemed (0 on a refusal).
    redemptions: int = 0
    redeemed_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """The document ``redeem --json`` prints."""
        if not self.ok:
            return {"ok": False, "reason": self.reason}
        return {
            "ok": True,
            "code": self.code,
            "pool": self.pool,
            "issued_to": self.issued_to,
            "redeemed_by": self.redeemed_by,
            "order": self.order,
        }


@dataclass(frozen=True)
class _Candidate:
    id: int
    pool_id: str
    status: str
    available_from: datetime | None
    available_till: datetime | None
    redemptions: int
    pool_status: str
    multi_use: bool
    require_issued: bool
    issued_valid_days: int | None


def redeem(
    engine: Engine,
    code: str,
    *,
    customer: str | None = None,
    order: str | None = None,
    pool_id: str | None = None,
    now: datetime | None = None,
) -> RedemptionResult:
    """Redeem ``code`` for ``customer`` (the buyer) and ``order``; refusals change nothing.

    ``pool_id`` is needed only when the same code string exists in several
    pools. The code is matched exactly, as it was uploaded.
    """
    moment = to_utc_naive(now) if now is not None else utcnow()
    with write_transaction(engine) as conn:
        return _redeem_in(conn, code, customer, order, pool_id, moment)


def _refused(code: str, reason: str) -> RedemptionResult:
    return RedemptionResult(ok=False, code=code, reason=reason)


def _redeem_in(
    conn: Connection,
    code: str,
    customer: str | None,
    order: str | None,
    pool_id: str | None,
    now: datetime,
) -> RedemptionResult:
    candidates = _candidates(conn, code, pool_id)
    if not candidates:
        if pool_id is not None and conn.execute(select(Pool.id).where(Pool.id == pool_id)).first():
            return _refused(code, f"{UNKNOWN_CODE} in pool {pool_id!r}")
        if pool_id is not None:
            return _refused(code, f"unknown pool {pool_id!r}")
        return _refused(code, UNKNOWN_CODE)
    if len(candidates) > 1:
        pools = ", ".join(sorted(c.pool_id for c in candidates))
        return _refused(code, f"ambiguous code: it is in pools {pools}; name the pool")
    found = candidates[0]
    reason = _refusal(found, now)
    if reason is not None:
        return _refused(code, reason)
    initial = _initial_issuances(conn, found.id)
    if found.require_issued:
        if not initial:
            return _refused(code, NEVER_ISSUED)
        issued_at = initial[0][1]
        if found.issued_valid_days is not None:
            valid_until = issued_at + timedelta(days=found.issued_valid_days)
            if now >= valid_until:
                return _refused(
                    code,
                    f"issued on {issued_at:%Y-%m-%d} and valid for "
                    f"{found.issued_valid_days} days, until {valid_until:%Y-%m-%d %H:%M} UTC",
                )
    if found.multi_use:
        recipients = {customer_id for customer_id, _ in initial}
        issued_to = customer if customer is not None and customer in recipients else None
        count = _count_multi_use(conn, found.id, now)
    else:
        issued_to = initial[0][0] if initial else None
        count = _take_single_use(conn, found.id, now)
    if count is None:
        # Another redeemer (or a void) got there between our read and our write.
        return _refused(code, _lost_race_reason(conn, found.id))
    conn.execute(
        insert(Redemption).values(
            pool_id=found.pool_id,
            code_id=found.id,
            issued_to=issued_to,
            redeemed_by=customer,
            order_id=order,
            redeemed_at=now,
        )
    )
    return RedemptionResult(
        ok=True,
        code=code,
        pool=found.pool_id,
        issued_to=issued_to,
        redeemed_by=customer,
        order=order,
        redemptions=count,
        redeemed_at=now,
    )


def _candidates(conn: Connection, code: str, pool_id: str | None) -> list[_Candidate]:
    query = (
        select(
            Code.id,
            Code.pool_id,
            Code.status,
            Code.available_from,
            Code.available_till,
            Code.redemptions,
            Pool.status.label("pool_status"),
            Pool.multi_use,
            Pool.require_issued,
            Pool.issued_valid_days,
        )
        .join(Pool, Pool.id == Code.pool_id)
        .where(Code.code == code)
        .order_by(Code.pool_id)
    )
    if pool_id is not None:
        query = query.where(Code.pool_id == pool_id)
    return [_Candidate(**row._mapping) for row in conn.execute(query)]


def _refusal(found: _Candidate, now: datetime) -> str | None:
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


def _initial_issuances(conn: Connection, code_id: int) -> list[tuple[str, datetime]]:
    """(customer, issued_at) of the code's initial issuances, earliest first."""
    rows = conn.execute(
        select(Issuance.customer_id, Issuance.issued_at)
        .where(Issuance.code_id == code_id, Issuance.kind == IssuanceKind.INITIAL)
        .order_by(Issuance.issued_at, Issuance.id)
    )
    return [(row[0], row[1]) for row in rows]


def _take_single_use(conn: Connection, code_id: int, now: datetime) -> int | None:
    """The atomic step: only one writer can move ``redemptions`` from 0 to 1.

    The code also leaves ``available``/``reserved`` for good, so a code
    redeemed before it was issued is never mailed afterwards.
    """
    row = conn.execute(
        update(Code)
        .where(Code.id == code_id, Code.redemptions == 0, Code.status != CodeStatus.VOID)
        .values(
            redemptions=Code.redemptions + 1,
            redeemed_at=now,
            status=CodeStatus.ISSUED,
            reserved_scope=None,
            reserved_token=None,
            reserved_until=None,
        )
        .returning(Code.redemptions)
    ).first()
    return None if row is None else int(row[0])


def _count_multi_use(conn: Connection, code_id: int, now: datetime) -> int | None:
    row = conn.execute(
        update(Code)
        .where(Code.id == code_id, Code.status != CodeStatus.VOID)
        .values(
            redemptions=Code.redemptions + 1,
            redeemed_at=func.coalesce(Code.redeemed_at, now),
        )
        .returning(Code.redemptions)
    ).first()
    return None if row is None else int(row[0])


def _lost_race_reason(conn: Connection, code_id: int) -> str:
    status = conn.execute(select(Code.status).where(Code.id == code_id)).scalar_one()
    return VOID_CODE if status == CodeStatus.VOID else ALREADY_REDEEMED
