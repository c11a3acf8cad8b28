"""Redeeming codes at checkout, with attribution to the customer and mailing that gave them.

The rules that must hold under any concurrency live in the database:

* "a single-use code is redeemed once": the redemption is a conditional
  ``UPDATE … WHERE redemptions = 0``, and a partial unique index allows one
  live (not rolled back) redemption of a single-use code;
* "an order redeems a code once": a partial unique index on (code, order)
  over live redemptions, so a retried checkout is answered from the
  redemption it already made (a replay) and never counts twice;
* "a code held for an order is redeemed by that order alone" (invariant
  13): the same conditional update lets a single-use code past a live
  checkout hold only for the holding order, and ends the hold;
* "a customer redeems a ``--once-per-customer`` code once": a partial
  unique index on (code, customer) over live redemptions of such codes.

A real redemption locks the code's row first (``SELECT … FOR UPDATE`` on
PostgreSQL; SQLite serialises writers with ``BEGIN IMMEDIATE``), so racing
attempts with one order queue on that row, and each one after the first sees
the committed redemption and replays it. Everything else (windows,
``--require-issued`` validity, void codes, holds; see
:mod:`pools.after_sending.checkout`) is checked in the same transaction, and
a refusal writes nothing at all. A dry run walks the same path in a
read-only transaction and stops before the first write, so it answers
exactly what a redemption would answer now, holds included.

Decisions beyond the specification:

* Draft pools are not live yet: their codes are refused. Archived pools stop
  issuing, but codes already in customers' hands stay redeemable.
* ``available_from`` is inclusive and ``available_till`` exclusive, as the
  import stores them (a date-only ``available_till`` means "through that
  day"). The ``--issued-valid-days`` period runs from the code's initial
  issuance; showing the code again (a reissue) does not extend it.
* A replay is answered before any other check: the checkout already
  succeeded, so a code that expired or was voided since does not turn the
  retry into a refusal.
* A single-use code redeemed before it was ever issued (a pool without
  ``--require-issued``, the code handed out some other way) leaves the pool:
  it becomes ``issued`` so no mailing sends it afterwards. A render holding
  it in a reservation then fails to settle that chunk and takes other codes,
  exactly as when the code is voided. Rolling that redemption back puts the
  code back into ``available``: nobody holds it any more.
* Multi-use codes are issued to many customers: ``issued_to`` names the
  redeeming customer when the code was issued to them, and is empty
  otherwise; ``mailing`` is the first mailing that gave it to them.
  ``redeemed_at`` on the code keeps the earliest live redemption.
* Returned issuances (messages never delivered) no longer attribute: the
  code went back to its pool and belongs to nobody until issued again.
* A roll-back (:mod:`pools.after_sending.rollback`) takes the same row lock
  as a hold, and never brings a hold back: the holder's redemption ended
  it, so a refunded order's code is free for any order again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    and_,
    bindparam,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import aliased

from promomail.pools.after_sending.checkout import (
    ALREADY_REDEEMED,
    NEVER_ISSUED,
    UNKNOWN_CODE,
    VOID_CODE,
    Candidate,
    Holder,
    code_refusal,
    hold_refusal,
    issue_refusal,
    live_issuance,
    lost_race_reason,
    one_code,
)
from promomail.pools.documents import document
from promomail.pools.errors import (
    StoreConflict,
)
from promomail.pools.store.clock import to_utc_naive, utcnow
from promomail.pools.store.db import read_transaction, write_transaction
from promomail.pools.store.models import Code, CodeStatus, Issuance, Redemption

__all__ = [
    "ALREADY_REDEEMED",
    "ALREADY_REDEEMED_BY_CUSTOMER",
    "NEEDS_CUSTOMER",
    "NEVER_ISSUED",
    "UNKNOWN_CODE",
    "VOID_CODE",
    "RedemptionResult",
    "redeem",
]

#: A ``--once-per-customer`` code redeemed again by the same customer (another order).
ALREADY_REDEEMED_BY_CUSTOMER = "already redeemed by this customer"
NEEDS_CUSTOMER = "each customer may redeem this code once: name the customer"

#: Attempts of one redemption that lost a race to a constraint (then it replays).
_ATTEMPTS = 3


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
    #: The mailing that gave the code to ``issued_to``.
    mailing: str | None = None
    #: True when this answer repeats an earlier redemption of the same order.
    replayed: bool = False
    #: True when nothing was written (``dry_run``): the answer a redemption would get now.
    dry_run: bool = False
    #: How many times the code has now been redeemed (0 on a refusal).
    redemptions: int = 0
    redeemed_at: datetime | None = None

    #: The fields of an accepted redemption's document (a refusal's: ``ok`` and ``reason``).
    DOCUMENT: ClassVar[tuple[str, ...]] = (
        *("ok", "code", "pool", "issued_to", "mailing", "redeemed_by", "order", "replayed"),
    )

    @property
    def not_found(self) -> bool:
        """A refusal because the code (or the pool named) does not exist, e.g. for a 404."""
        reason = self.reason or ""
        return not self.ok and (
            reason.startswith(UNKNOWN_CODE) or reason.startswith("unknown pool")
        )

    def as_dict(self) -> dict[str, Any]:
        """The document ``redeem --json`` prints (a dry run prints the same one)."""
        if not self.ok:
            return {"ok": False, "reason": self.reason}
        return document(self)


def redeem(
    engine: Engine,
    code: str,
    *,
    customer: str | None = None,
    order: str | None = None,
    pool: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RedemptionResult:
    """Redeem ``code`` for ``customer`` (the buyer) and ``order``; refusals change nothing.

    ``pool`` is needed only when the same code string exists in several
    pools. The code is matched exactly, as it was uploaded. Redeeming again
    with the order of a live redemption answers that redemption again with
    ``replayed`` set. With ``dry_run`` nothing is written and the answer is
    the one a redemption would get now.
    """
    moment = to_utc_naive(now) if now is not None else utcnow()
    if dry_run:
        with read_transaction(engine) as conn:
            return _redeem_in(conn, code, customer, order, pool, moment, dry_run=True)
    for attempt in range(_ATTEMPTS):
        try:
            with write_transaction(engine) as conn:
                return _redeem_in(conn, code, customer, order, pool, moment, dry_run=False)
        except StoreConflict:
            # A racing redemption of the same code and order committed between
            # our checks and our insert (the row lock makes this rare); the
            # next attempt sees it and replays it.
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _refused(code: str, reason: str) -> RedemptionResult:
    return RedemptionResult(ok=False, code=code, reason=reason)


def _redeem_in(
    conn: Connection,
    code: str,
    customer: str | None,
    order: str | None,
    pool_id: str | None,
    now: datetime,
    *,
    dry_run: bool,
) -> RedemptionResult:
    found = one_code(conn, code, pool_id, lock=not dry_run)
    if isinstance(found, str):
        return _refused(code, found)
    # After the lock: on PostgreSQL a statement sees what committed before it began.
    known = _known(conn, found, code, order, customer)
    if known.replay is not None:
        return replace(known.replay, dry_run=dry_run)
    reason = code_refusal(found, now) or hold_refusal(found, order, now)
    if reason is None and found.once_per_customer:
        reason = _customer_refusal(customer, known.customer_redeemed)
    if reason is None:
        reason = issue_refusal(found, known.holder, now)
    if reason is not None:
        return _refused(code, reason)
    holder = known.holder
    issued_to = holder.customer if holder else None
    mailing = holder.mailing if holder else None
    if dry_run:
        count: int | None = found.redemptions + 1
    elif found.multi_use:
        count = _count_multi_use(conn, found.id, now)
    else:
        count = _take_single_use(conn, found.id, order, now)
    if count is None:
        # Another redeemer, a holder or a void got there between our read and our write.
        if order is not None:
            earlier = _replay(conn, found, code, order)
            if earlier is not None:
                return earlier
        return _refused(code, lost_race_reason(conn, found.id, now))
    if not dry_run:
        conn.execute(
            _RECORD_REDEMPTION,
            {
                "pool_id": found.pool_id,
                "code_id": found.id,
                "issued_to": issued_to,
                "redeemed_by": customer,
                "order_id": order,
                "redeemed_at": now,
                "mailing_id": mailing,
                "exclusive": not found.multi_use,
                "once_per_customer": found.once_per_customer,
            },
        )
    return RedemptionResult(
        ok=True,
        code=code,
        pool=found.pool_id,
        issued_to=issued_to,
        redeemed_by=customer,
        order=order,
        mailing=mailing,
        dry_run=dry_run,
        redemptions=count,
        redeemed_at=now,
    )


def _customer_refusal(customer: str | None, redeemed_before: bool) -> str | None:
    """A ``--once-per-customer`` code: the customer must be named and not have redeemed it.

    The partial unique index on (code, customer) makes a racing second
    redemption fail at its insert; the attempt after it lands here.
    """
    if customer is None:
        return NEEDS_CUSTOMER
    return ALREADY_REDEEMED_BY_CUSTOMER if redeemed_before else None


@dataclass(frozen=True)
class _Known:
    """What the checkout's order and customer already have of a code."""

    #: The order's live redemption of it, answered again.
    replay: RedemptionResult | None
    #: Whom it was issued to (for a shared code: this customer, or nobody).
    holder: Holder | None
    #: A ``--once-per-customer`` code this customer has redeemed live.
    customer_redeemed: bool


def _known(
    conn: Connection, found: Candidate, code: str, order: str | None, customer: str | None
) -> _Known:
    """The replay, the holder and the customer's earlier redemption, in one statement."""
    row = conn.execute(
        _KNOWN[found.multi_use, found.once_per_customer],
        {"code_id": found.id, "order": order, "customer": customer, "pool_id": found.pool_id},
    ).one()
    replay = None
    if row.earlier_id is not None:
        assert order is not None  # the join matches an order's redemption only
        replay = _replayed(found, code, order, row)
    holder = None if row.holder is None else Holder(row.holder, row.holder_mailing, row.issued_at)
    return _Known(replay, holder, bool(row.customer_redeemed))


def _replay(conn: Connection, found: Candidate, code: str, order: str) -> RedemptionResult | None:
    """The live redemption of this code by this order, answered again."""
    row = conn.execute(_ORDERS_REDEMPTION, {"code_id": found.id, "order": order}).first()
    return None if row is None else _replayed(found, code, order, row)


def _replayed(found: Candidate, code: str, order: str, row: Any) -> RedemptionResult:
    return RedemptionResult(
        ok=True,
        code=code,
        pool=found.pool_id,
        issued_to=row.issued_to,
        redeemed_by=row.redeemed_by,
        order=order,
        mailing=row.mailing_id,
        replayed=True,
        redemptions=found.redemptions,
        redeemed_at=row.redeemed_at,
    )


def _take_single_use(
    conn: Connection, code_id: int, order: str | None, now: datetime
) -> int | None:
    """The atomic step: only one writer can move ``redemptions`` from 0 to 1.

    Only the holding order gets past a live hold (invariant 13), in this very
    statement, and its redemption ends the hold. The code also leaves
    ``available``/``reserved`` for good, so a code redeemed before it was
    issued is never mailed afterwards.
    """
    statement = _TAKE_SINGLE_USE if order is None else _TAKE_SINGLE_USE_FOR_ORDER
    row = conn.execute(statement, {"code_id": code_id, "now": now, "order": order}).first()
    return None if row is None else int(row[0])


def _count_multi_use(conn: Connection, code_id: int, now: datetime) -> int | None:
    row = conn.execute(_COUNT_MULTI_USE, {"code_id": code_id, "now": now}).first()
    return None if row is None else int(row[0])


# A redemption's statements, built once: each is then a compiled-cache hit
# (building a statement costs a checkout more than the database's work on it).
_RECORD_REDEMPTION = insert(Redemption).values(
    {
        column: bindparam(column)
        for column in (
            "pool_id",
            "code_id",
            "issued_to",
            "redeemed_by",
            "order_id",
            "redeemed_at",
            "mailing_id",
            "exclusive",
            "once_per_customer",
        )
    }
)
_ORDERS_REDEMPTION = select(
    Redemption.issued_to,
    Redemption.redeemed_by,
    Redemption.mailing_id,
    Redemption.redeemed_at,
).where(
    Redemption.code_id == bindparam("code_id"),
    Redemption.order_id == bindparam("order"),
    Redemption.rolled_back_at.is_(None),
)


def _known_statement(multi_use: bool, once_per_customer: bool) -> Any:
    """One row: the code's own, joined to the order's live redemption and to its holder."""
    earlier = aliased(Redemption)
    holder = aliased(Issuance)
    holder_id = live_issuance(of_customer=multi_use).with_only_columns(Issuance.id)
    customer_redeemed: Any = false()
    if once_per_customer:
        customer_redeemed = exists().where(
            Redemption.code_id == bindparam("code_id"),
            Redemption.redeemed_by == bindparam("customer"),
            Redemption.once_per_customer,
            Redemption.rolled_back_at.is_(None),
        )
    return (
        select(
            earlier.id.label("earlier_id"),
            earlier.issued_to,
            earlier.redeemed_by,
            earlier.mailing_id,
            earlier.redeemed_at,
            holder.customer_id.label("holder"),
            holder.mailing_id.label("holder_mailing"),
            holder.issued_at,
            customer_redeemed.label("customer_redeemed"),
        )
        .select_from(Code)
        .outerjoin(
            earlier,
            and_(
                earlier.code_id == Code.id,
                earlier.order_id == bindparam("order"),
                earlier.rolled_back_at.is_(None),
            ),
        )
        .outerjoin(holder, holder.id == holder_id.scalar_subquery())
        .where(Code.id == bindparam("code_id"))
    )


_KNOWN = {
    (multi_use, once_per_customer): _known_statement(multi_use, once_per_customer)
    for multi_use in (False, True)
    for once_per_customer in (False, True)
}


def _take_single_use_statement(for_order: bool) -> Any:
    now = bindparam("now", type_=DateTime())
    hold_free = or_(Code.hold_until.is_(None), Code.hold_until <= now)
    if for_order:
        hold_free = or_(hold_free, Code.hold_order == bindparam("order"))
    return (
        update(Code)
        .where(
            Code.id == bindparam("code_id"),
            Code.redemptions == 0,
            Code.status != CodeStatus.VOID,
            hold_free,
        )
        .values(
            redemptions=Code.redemptions + 1,
            redeemed_at=now,
            status=CodeStatus.ISSUED,
            # A render holding it in a reservation then fails to settle it.
            reserved_token=None,
            hold_order=None,
            hold_until=None,
        )
        .returning(Code.redemptions)
    )


_TAKE_SINGLE_USE = _take_single_use_statement(for_order=False)
_TAKE_SINGLE_USE_FOR_ORDER = _take_single_use_statement(for_order=True)
_COUNT_MULTI_USE = (
    update(Code)
    .where(Code.id == bindparam("code_id"), Code.status != CodeStatus.VOID)
    .values(
        redemptions=Code.redemptions + 1,
        redeemed_at=func.coalesce(Code.redeemed_at, bindparam("now", type_=DateTime())),
    )
    .returning(Code.redemptions)
)
