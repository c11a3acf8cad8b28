"""Checkout holds: a single-use code kept for one order while its payment runs.

A checkout holds the code when the customer enters it, redeems it with the
same order once the payment succeeded, and releases it when the payment
failed; an abandoned cart's hold simply runs out. While the hold lasts,
every other order (or a checkout naming none) is refused, dry runs
included, with ``held by another order until TIME``.

The hold is two columns of the code's own row (``hold_order``,
``hold_until``), so "one live hold per code" (invariant 13) is the shape of
the data, and taking a hold is one conditional update of that row: it
succeeds only when the code carries no hold that counts now, or one of the
same order. Expiry needs nothing running: a hold whose time has passed
simply no longer counts, for redemptions, for other holds and for the
``held`` count alike, and the next hold or redemption overwrites it.
Redemptions check the hold in the same statement that takes the code
(:mod:`pools.after_sending.redemption`), so a hold and a redemption of one
code never both win, on either database.

A hold is refused for every reason a redemption would be refused now, in
the same words (unknown, void, already redeemed, outside its window,
``--require-issued`` rules), and a multi-use code is never held: everyone
may redeem it at once.

Decisions beyond the specification:

* ``hold`` again by the holding order is a replay: it answers the hold
  again (``replayed``) and moves its end to ``now + DURATION`` when that
  is later, never earlier.
* An order whose hold ran out holds nothing: a ``hold`` then is a new hold,
  and a ``release`` finds nothing to release.
* Voiding a code ends its hold; a code given back by a mailing keeps it
  (the checkout holding it may still redeem it, as it could redeem it
  before).
* Ends are whole seconds (rounded up), so the time a refusal names is the
  hold's exact end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import DateTime, Engine, bindparam, or_, update

from promomail.pools.after_sending.checkout import (
    UNKNOWN_CODE,
    Candidate,
    code_refusal,
    find_codes,
    hold_refusal,
    holder_of,
    issue_refusal,
    lost_race_reason,
    not_found_reason,
    one_code,
)
from promomail.pools.choices import DEFAULT_HOLD
from promomail.pools.documents import document
from promomail.pools.errors import InvalidSetting
from promomail.pools.store.clock import to_utc_naive, utcnow
from promomail.pools.store.db import write_transaction
from promomail.pools.store.models import Code, CodeStatus

MIN_HOLD = timedelta(seconds=30)
MAX_HOLD = timedelta(hours=24)
MULTI_USE_NEEDS_NO_HOLD = "multi-use codes need no hold"
#: The start of a release's refusal when the order holds nothing on the code.
HOLDS_NOTHING = "holds nothing"

_DURATION = re.compile(r"([0-9]{1,6})(s|m|h|d)?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_hold_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``2h`` (or plain seconds): a hold's length, 30 s to 24 h."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidSetting(f"{text!r} is not a duration (e.g. 30s, 15m, 2h)")
    return check_hold_length(timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2] or "s"]))


def check_hold_length(length: timedelta) -> timedelta:
    """``length`` when a hold may last that long, else a refusal saying what may."""
    if not MIN_HOLD <= length <= MAX_HOLD:
        seconds = int(length.total_seconds())
        raise InvalidSetting(
            f"a hold lasts from 30 seconds to 24 hours (30s to 24h), not {seconds} seconds"
        )
    return length


@dataclass(frozen=True)
class HoldResult:
    """The answer to ``hold``: the code held until ``expires_at``, or the reason it is not."""

    ok: bool
    code: str
    pool: str | None = None
    order: str | None = None
    expires_at: datetime | None = None
    #: True when the order already held the code (the hold may have been extended).
    replayed: bool = False
    reason: str | None = None

    #: The fields of a hold's document (a refusal's: ``ok`` and ``reason``).
    DOCUMENT: ClassVar[tuple[str, ...]] = ("ok", "code", "pool", "order", "expires_at", "replayed")

    @property
    def not_found(self) -> bool:
        """A refusal because the code (or the pool named) does not exist, e.g. for a 404."""
        return not self.ok and _names_nothing(self.reason)

    def as_dict(self) -> dict[str, Any]:
        """The document ``hold --json`` prints."""
        if not self.ok:
            return {"ok": False, "reason": self.reason}
        assert self.expires_at is not None
        return document(self)


@dataclass(frozen=True)
class ReleaseResult:
    """The answer to ``release``: the hold ended now, or the reason there was none to end."""

    ok: bool
    code: str
    pool: str | None = None
    order: str | None = None
    released_at: datetime | None = None
    reason: str | None = None

    #: The fields of a release's document (a refusal's: ``ok`` and ``reason``).
    DOCUMENT: ClassVar[tuple[str, ...]] = ("ok", "code", "pool", "order", "released_at")

    @property
    def not_found(self) -> bool:
        """Nothing to release: no such code, or no hold of that order on it (a 404)."""
        return not self.ok and (_names_nothing(self.reason) or HOLDS_NOTHING in (self.reason or ""))

    def as_dict(self) -> dict[str, Any]:
        """The document ``release --json`` prints."""
        if not self.ok:
            return {"ok": False, "reason": self.reason}
        assert self.released_at is not None
        return document(self)


def _names_nothing(reason: str | None) -> bool:
    text = reason or ""
    return text.startswith(UNKNOWN_CODE) or text.startswith("unknown pool")


def hold_code(
    engine: Engine,
    code: str,
    *,
    order: str,
    customer: str | None = None,
    pool: str | None = None,
    length: timedelta = DEFAULT_HOLD,
    now: datetime | None = None,
) -> HoldResult:
    """Hold single-use ``code`` for ``order`` for ``length``; a refusal changes nothing.

    ``customer`` is the buyer, taken as ``redeem`` takes it and passed to
    the same checks; no rule of a single-use code depends on who buys, and
    the hold belongs to the order, so it is not stored. ``pool`` is needed
    only when the same code string exists in several pools.
    """
    check_hold_length(length)
    moment = to_utc_naive(now) if now is not None else utcnow()
    with write_transaction(engine) as conn:
        found = one_code(conn, code, pool, lock=True)
        if isinstance(found, str):
            return HoldResult(ok=False, code=code, reason=found)
        reason = _refusal(found, order, moment)
        if reason is None and found.require_issued:
            # Only these pools' rules look at the issuance: others skip the look-up.
            reason = issue_refusal(found, holder_of(conn, found, customer), moment)
        if reason is not None:
            return HoldResult(ok=False, code=code, reason=reason)
        current = found.live_hold(moment)
        until = _whole_second(moment + length)
        if current is not None:
            until = max(until, current[1])
        taken = conn.execute(
            _TAKE_HOLD, {"code_id": found.id, "now": moment, "order": order, "until": until}
        ).first()
        if taken is None:
            return HoldResult(ok=False, code=code, reason=lost_race_reason(conn, found.id, moment))
        return HoldResult(
            ok=True,
            code=code,
            pool=found.pool_id,
            order=order,
            expires_at=until,
            replayed=current is not None,
        )


def _refusal(found: Candidate, order: str, now: datetime) -> str | None:
    """Why the code cannot be held for ``order``, judging by its row and its pool's."""
    reason = code_refusal(found, now)
    if reason is not None:
        return reason
    if found.multi_use:
        return MULTI_USE_NEEDS_NO_HOLD
    return hold_refusal(found, order, now)


def _held_by(found: Candidate, order: str, now: datetime) -> bool:
    current = found.live_hold(now)
    return current is not None and current[0] == order


def _whole_second(moment: datetime) -> datetime:
    rounded = moment.replace(microsecond=0)
    return rounded if rounded == moment else rounded + timedelta(seconds=1)


def release_hold(
    engine: Engine,
    code: str,
    *,
    order: str,
    pool: str | None = None,
    now: datetime | None = None,
) -> ReleaseResult:
    """End ``order``'s hold of ``code`` at once (the payment failed, the cart was abandoned).

    Refused, changing nothing, when the order holds nothing on the code now
    (never held it, released it, redeemed it, or the hold ran out).
    """
    moment = to_utc_naive(now) if now is not None else utcnow()
    with write_transaction(engine) as conn:
        candidates = find_codes(conn, code, pool, lock=True)
        if not candidates:
            return ReleaseResult(ok=False, code=code, reason=not_found_reason(conn, pool))
        held = [c for c in candidates if _held_by(c, order, moment)]
        if not held:
            reason = f"order {order!r} {HOLDS_NOTHING} on code {code!r}"
            return ReleaseResult(ok=False, code=code, reason=reason)
        if len(held) > 1:
            pools = ", ".join(c.pool_id for c in held)
            reason = f"order {order!r} holds code {code!r} in pools {pools}; name the pool"
            return ReleaseResult(ok=False, code=code, reason=reason)
        [found] = held
        conn.execute(_END_HOLD, {"code_id": found.id, "order": order, "now": moment})
        return ReleaseResult(
            ok=True, code=code, pool=found.pool_id, order=order, released_at=moment
        )


# A hold's and a release's writes, built once: each is then a compiled-cache
# hit (building a statement costs a checkout more than the database's work on it).
_NOW = bindparam("now", type_=DateTime())
_TAKE_HOLD = (
    update(Code)
    .where(
        Code.id == bindparam("code_id"),
        Code.redemptions == 0,
        Code.status != CodeStatus.VOID,
        # The rule itself, so it holds even against a writer that read this
        # row before another hold committed.
        or_(
            Code.hold_until.is_(None),
            Code.hold_until <= _NOW,
            Code.hold_order == bindparam("order"),
        ),
    )
    .values(hold_order=bindparam("order"), hold_until=bindparam("until", type_=DateTime()))
    .returning(Code.id)
)
_END_HOLD = (
    update(Code)
    .where(
        Code.id == bindparam("code_id"),
        Code.hold_order == bindparam("order"),
        Code.hold_until > _NOW,
    )
    .values(hold_order=None, hold_until=None)
)

__all__ = [
    "DEFAULT_HOLD",
    "MAX_HOLD",
    "MIN_HOLD",
    "MULTI_USE_NEEDS_NO_HOLD",
    "HoldResult",
    "ReleaseResult",
    "check_hold_length",
    "hold_code",
    "parse_hold_duration",
    "release_hold",
]
