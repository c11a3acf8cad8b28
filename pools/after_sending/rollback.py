"""Undoing a redemption: the order was cancelled or refunded.

The redemption stays in the history, marked rolled back; a single-use code
can then be redeemed again, and a multi-use code's count drops by one. A
roll-back takes the same row lock as a redemption and a hold, and never
brings a hold back (see :mod:`pools.after_sending.redemption`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, bindparam, func, select, update

from promomail.pools.after_sending.checkout import UNKNOWN_CODE, find_codes, live_holder
from promomail.pools.documents import document
from promomail.pools.errors import PromomailError, RedemptionNotFound, RollbackAmbiguous
from promomail.pools.store.clock import to_utc_naive, utcnow
from promomail.pools.store.db import write_transaction
from promomail.pools.store.models import Code, CodeStatus, Redemption

__all__ = ["RollbackResult", "unredeem"]


@dataclass(frozen=True)
class RollbackResult:
    """An undone redemption: what it was, when it was undone, the code's count now."""

    code: str
    pool: str
    #: The order whose redemption was undone; None for one made without an order.
    order: str | None
    issued_to: str | None
    mailing: str | None
    redeemed_by: str | None
    redeemed_at: datetime
    rolled_back_at: datetime
    #: How many live redemptions the code has left.
    redemptions: int

    def as_dict(self) -> dict[str, Any]:
        """The document ``unredeem --json`` prints."""
        return {"ok": True, **document(self)}


def unredeem(
    engine: Engine,
    code: str,
    *,
    order: str | None = None,
    pool: str | None = None,
    now: datetime | None = None,
) -> RollbackResult:
    """Undo the live redemption of ``code`` by ``order`` (cancelled or refunded).

    Without ``order`` it undoes the code's one live redemption made without
    an order (a till that sends none), so that one is never beyond undoing.
    The redemption stays in the history, marked rolled back. A single-use
    code can then be redeemed again; a multi-use code's count drops by one.
    Raises :class:`RedemptionNotFound`, changing nothing, when the code has
    no live redemption for that order (or none without an order), and
    :class:`RollbackAmbiguous` when several redemptions without an order
    could be meant.
    """
    moment = to_utc_naive(now) if now is not None else utcnow()
    with write_transaction(engine) as conn:
        return _unredeem_in(conn, code, order, pool, moment)


def _unredeem_in(
    conn: Connection, code: str, order: str | None, pool_id: str | None, now: datetime
) -> RollbackResult:
    # The same lock a redemption takes: a roll-back and a redemption of one
    # code run one after the other.
    code_ids = [candidate.id for candidate in find_codes(conn, code, pool_id, lock=True)]
    if not code_ids:
        where = f" in pool {pool_id!r}" if pool_id is not None else ""
        raise RedemptionNotFound(code, order, f": {UNKNOWN_CODE}{where}")
    rows = conn.execute(
        _LIVE_REDEMPTIONS[order is None],
        {"code_ids": code_ids, "order": order},
    ).all()
    if not rows:
        raise RedemptionNotFound(code, order)
    if len(rows) > 1:
        if len({r.code_id for r in rows}) == 1:
            # Only a multi-use code gets here: its redemptions without an
            # order cannot be told apart, so undoing "one" would be a guess.
            raise RollbackAmbiguous(code, len(rows))
        pools = ", ".join(sorted(r.pool_id for r in rows))
        by = f"by order {order!r}" if order is not None else "without an order"
        raise PromomailError(f"code {code!r} was redeemed {by} in pools {pools}; name the pool")
    found = rows[0]
    conn.execute(_ROLL_BACK, {"redemption_id": found.id, "now": now})
    remaining = int(conn.execute(_UNCOUNT, {"code_id": found.code_id}).scalar_one())
    if found.exclusive and remaining == 0 and live_holder(conn, found.code_id) is None:
        # Redeemed before anyone was given it: nobody holds it now, so it
        # goes back into the pool rather than staying out of it for good.
        conn.execute(_BACK_TO_POOL, {"code_id": found.code_id})
    return RollbackResult(
        code=code,
        pool=found.pool_id,
        order=order,
        issued_to=found.issued_to,
        mailing=found.mailing_id,
        redeemed_by=found.redeemed_by,
        redeemed_at=found.redeemed_at,
        rolled_back_at=now,
        redemptions=remaining,
    )


# A roll-back's statements, built once: each is then a compiled-cache hit
# (building a statement costs a checkout more than the database's work on it).
def _live_redemptions(without_order: bool) -> Any:
    return select(
        Redemption.id,
        Redemption.code_id,
        Redemption.pool_id,
        Redemption.issued_to,
        Redemption.mailing_id,
        Redemption.redeemed_by,
        Redemption.redeemed_at,
        Redemption.exclusive,
    ).where(
        Redemption.code_id.in_(bindparam("code_ids", expanding=True)),
        Redemption.order_id.is_(None)
        if without_order
        else Redemption.order_id == bindparam("order"),
        Redemption.rolled_back_at.is_(None),
    )


_LIVE_REDEMPTIONS = {
    without_order: _live_redemptions(without_order) for without_order in (False, True)
}
_ROLL_BACK = (
    update(Redemption)
    .where(Redemption.id == bindparam("redemption_id"), Redemption.rolled_back_at.is_(None))
    .values(rolled_back_at=bindparam("now", type_=DateTime()))
)
_EARLIEST_LIVE = (
    select(func.min(Redemption.redeemed_at))
    .where(Redemption.code_id == Code.id, Redemption.rolled_back_at.is_(None))
    .scalar_subquery()
)
_UNCOUNT = (
    update(Code)
    .where(Code.id == bindparam("code_id"))
    .values(redemptions=Code.redemptions - 1, redeemed_at=_EARLIEST_LIVE)
    .returning(Code.redemptions)
)
_BACK_TO_POOL = (
    update(Code)
    .where(Code.id == bindparam("code_id"), Code.status == CodeStatus.ISSUED)
    .values(status=CodeStatus.AVAILABLE)
)
