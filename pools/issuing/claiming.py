"""Handing codes to customers: reservations, issuance and reclaiming.

Two ways in:

* :func:`claim` issues codes to many customers of one mailing in a single
  transaction. It is idempotent per (mailing, customer, pool): a customer who
  already has a code from this mailing gets the same code again.
* :func:`reserve` / :func:`settle` split that in two for lazy template
  rendering: reserve a chunk's worth of codes, render (codes are handed out
  only when a ``promocode`` call really runs), then in one transaction record
  the issuances and put the unused codes back.

A reservation carries a scope (the mailing, and shard when sharded) and an
expiry. If its process dies, the codes are reclaimed by the next run of the
same scope (:func:`reclaim_scope`) or by anyone once the reservation expired
(:func:`reclaim_expired`), so a code is always either issued or available
again.

Each code row is written once per issuance: reserving marks it ``issued``
under the reservation's token, and a ``held_codes`` row (scope, expiry, the
code ids) says the reservation is still open. Settling deletes that row and
inserts the issuances, checking code by code that the token is still there,
so codes that were reclaimed, voided or redeemed in the meantime are never
issued on a stale reservation. Whoever frees reserved codes deletes their
``held_codes`` rows first: on PostgreSQL that row is what a concurrent
settle and reclaim of one reservation queue on.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.sql.elements import ColumnElement

from promomail.pools.admin.lifecycle import PoolView, issuing_mode, load_pool, require_active
from promomail.pools.codes.counts import issuable_now
from promomail.pools.display import counted
from promomail.pools.errors import PoolExhausted, ReservationLost, StoreConflict
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import write_transaction
from promomail.pools.store.dialect_sql import (
    Hold,
    PromoCode,
    close_reservations,
    insert_issuances,
    issue_reserved,
    lock_held_in_order,
    release_reserved,
    take_codes,
)
from promomail.pools.store.models import Code, HeldCodes, Issuance, IssuanceKind
from promomail.pools.store.row_sets import one_of

DEFAULT_RESERVATION_TTL = timedelta(minutes=10)
_NO_REFS: Mapping[str, str] = {}
_RETRIES_ON_RACE = 5


@dataclass
class Reservation:
    """Codes held for one chunk of a render, handed out one at a time.

    A multi-use pool's reservation holds its one shared code, which every
    take returns without consuming it.
    """

    pool_id: str
    scope: str
    token: str
    codes: list[PromoCode]
    exclusive: bool = True
    _free: deque[PromoCode] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._free = deque(self.codes)

    def take(self) -> PromoCode | None:
        """The next code, or None when the reservation is used up."""
        if not self.exclusive:
            return self.codes[0] if self.codes else None
        return self._free.popleft() if self._free else None

    def give_back(self, code: PromoCode) -> None:
        """Return a code taken for a recipient whose message then failed."""
        if self.exclusive:
            self._free.appendleft(code)

    def top_up(self, more: Reservation) -> None:
        """Add codes reserved later under the same token (see ``reserve_many``)."""
        assert more.token == self.token and more.pool_id == self.pool_id
        if self.exclusive:
            self.codes.extend(more.codes)
            self._free.extend(more.codes)
        elif not self.codes:
            self.codes.extend(more.codes)


def existing_codes(
    conn: Connection, mailing_id: str, pool_id: str, customer_ids: Iterable[str]
) -> dict[str, PromoCode]:
    """Initial codes this mailing already gave these customers from this pool."""
    ids = list(customer_ids)
    if not ids:
        return {}
    rows = conn.execute(
        select(Issuance.customer_id, Issuance.code_id, Code.code)
        .join(Code, Code.id == Issuance.code_id)
        .where(
            Issuance.mailing_id == mailing_id,
            Issuance.pool_id == pool_id,
            Issuance.kind == IssuanceKind.INITIAL,
            Issuance.slot == 0,
            one_of(conn, Issuance.customer_id, ids),
            # Returned codes were never delivered: a re-run issues new ones.
            Issuance.returned_at.is_(None),
        )
    )
    return {r.customer_id: PromoCode(None, r.code_id, r.code, r.customer_id) for r in rows}


def shared_code(conn: Connection, pool: PoolView, now: datetime) -> PromoCode | None:
    """A multi-use pool's code: the soonest-expiring issuable one, never consumed."""
    row = conn.execute(
        select(Code.issuable_until, Code.id, Code.code)
        .where(Code.pool_id == pool.id, issuable_now(now))
        .order_by(Code.issuable_until, Code.id)
        .limit(1)
    ).first()
    return PromoCode(row[0], row[1], row[2]) if row else None


def _record(
    conn: Connection,
    mailing_id: str,
    pool_id: str,
    issued: Sequence[PromoCode],
    *,
    kind: IssuanceKind,
    exclusive: bool,
    now: datetime,
    refs: Mapping[str, str] = _NO_REFS,
) -> None:
    get = refs.get
    insert_issuances(
        conn,
        [
            (
                pool_id,
                item.id,
                item.customer_id,
                mailing_id,
                kind,
                item.slot,
                exclusive,
                now,
                get(item.customer_id),
            )
            for item in issued
        ],
    )


def claim(
    engine: Engine,
    pool_id: str,
    mailing_id: str,
    customer_ids: Sequence[str],
    *,
    partial: bool = False,
) -> dict[str, str]:
    """Issue one code per customer for this mailing, in one transaction.

    Customers who already have a code from this mailing and pool get it
    again. When the pool cannot cover everyone, nothing is issued and
    :class:`PoolExhausted` is raised, unless ``partial`` is set: then as many
    customers as possible (in the given order) get codes and the answer
    leaves the others out.
    """
    unique_ids = list(dict.fromkeys(customer_ids))
    for attempt in range(_RETRIES_ON_RACE):
        try:
            with write_transaction(engine) as conn:
                return _claim_in(conn, pool_id, mailing_id, unique_ids, partial)
        except StoreConflict:
            # Another process issued to one of these customers in the same
            # mailing between our read and our insert (PostgreSQL only; SQLite
            # writers are serialised). Its codes are visible now: try again.
            if attempt == _RETRIES_ON_RACE - 1:
                raise
    raise AssertionError("unreachable")


def _claim_in(
    conn: Connection, pool_id: str, mailing_id: str, customer_ids: list[str], partial: bool
) -> dict[str, str]:
    pool = load_pool(conn, pool_id)
    require_active(pool)
    now = utcnow()
    have = existing_codes(conn, mailing_id, pool_id, customer_ids)
    missing = [c for c in customer_ids if c not in have]
    if pool.settings.multi_use:
        shared = shared_code(conn, pool, now)
        taken = [shared] * len(missing) if shared else []
    else:
        taken = take_codes(conn, pool_id, len(missing), now=now)
    if len(taken) < len(missing) and not partial:
        raise PoolExhausted(pool_id, len(missing), len(taken), shared=pool.settings.multi_use)
    issued = [t.to(c) for c, t in zip(missing, taken, strict=False)]
    _record(
        conn,
        mailing_id,
        pool_id,
        issued,
        kind=IssuanceKind.INITIAL,
        exclusive=not pool.settings.multi_use,
        now=now,
    )
    answer = {c: item.code for c, item in have.items()}
    answer.update({item.customer_id: item.code for item in issued})
    return {c: answer[c] for c in customer_ids if c in answer}


def reserve(
    engine: Engine,
    pool_id: str,
    count: int,
    *,
    scope: str,
    ttl: timedelta = DEFAULT_RESERVATION_TTL,
) -> Reservation:
    """Hold up to ``count`` codes of one pool; fewer when the pool runs low."""
    return reserve_many(engine, {pool_id: count}, scope=scope, ttl=ttl)[pool_id]


def reserve_many(
    engine: Engine,
    counts: Mapping[str, int],
    *,
    scope: str,
    ttl: timedelta = DEFAULT_RESERVATION_TTL,
    token: str | None = None,
) -> dict[str, Reservation]:
    """Hold codes from several pools for one chunk, in one transaction.

    Pass the ``token`` of an earlier reservation to top it up: one settle
    then covers both.
    """
    token = token or uuid.uuid4().hex
    reservations: dict[str, Reservation] = {}
    with write_transaction(engine) as conn:
        now = utcnow()
        hold = Hold(token, scope, now + ttl)
        for pool_id, count in counts.items():
            taken = take_codes(conn, pool_id, count, now=now, hold=hold)
            # Nothing came out of a missing or inactive pool (refused here),
            # of a multi-use one (its shared code is handed out instead), or
            # of one that ran out.
            if not taken and issuing_mode(conn, pool_id):
                shared = shared_code(conn, load_pool(conn, pool_id), now)
                codes = [shared] if shared and count > 0 else []
                reservations[pool_id] = Reservation(pool_id, scope, token, codes, exclusive=False)
                continue
            reservations[pool_id] = Reservation(pool_id, scope, token, taken)
    return reservations


def settle(
    engine: Engine,
    mailing_id: str,
    reservations: Sequence[Reservation],
    handed: Mapping[str, Sequence[PromoCode]],
    reissues: Sequence[tuple[str, str, int]] = (),
    refs: Mapping[str, str] = _NO_REFS,
    recorded: Mapping[str, str] = _NO_REFS,
) -> None:
    """Record a chunk's issuances and release its unused codes, atomically.

    ``handed`` maps pool id → the codes taken from that pool's reservation,
    each handed to its customer (:meth:`PromoCode.to`); ``reissues`` lists
    (pool, customer, code id) shown again by ``last_promocode``. ``refs``
    maps a customer to the delivery reference of the message that showed
    these codes, stamped on each issuance; ``recorded`` does the same for
    messages of a re-run that show what the mailing recorded before (see
    :func:`forget_other_refs`). Raises
    :class:`ReservationLost` (and changes nothing) if any reserved code was
    reclaimed, voided or redeemed before this commit.
    """
    now = utcnow()
    with write_transaction(engine) as conn:
        # Closing the reservations first: a reclaim of the same reservation
        # running now either finished before (its codes then fail the check
        # below) or finds nothing left to free.
        close_reservations(conn, {r.token for r in reservations if r.exclusive and r.codes})
        for reservation in reservations:
            handouts = handed.get(reservation.pool_id, ())
            if not reservation.exclusive:
                _record(
                    conn,
                    mailing_id,
                    reservation.pool_id,
                    handouts,
                    kind=IssuanceKind.INITIAL,
                    exclusive=False,
                    now=now,
                    refs=refs,
                )
                continue
            get = refs.get
            rows = [(h.id, h.customer_id, h.slot, get(h.customer_id)) for h in handouts]
            used_ids = {row[0] for row in rows}
            if len(used_ids) < len(rows):
                # One code handed out twice: the reservation was reclaimed and a
                # top-up under its token took the freed code again.
                raise ReservationLost(
                    f"codes reserved from pool {reservation.pool_id!r} were reclaimed "
                    "and reserved again before they could be issued"
                )
            issued = issue_reserved(
                conn, reservation.pool_id, reservation.token, mailing_id, rows, now
            )
            unused = [c.id for c in reservation.codes if c.id not in used_ids]
            released = release_reserved(conn, reservation.token, unused)
            lost = len(rows) - issued + len(unused) - released
            if lost:
                raise ReservationLost(
                    f"{counted(lost, 'code')} reserved from pool {reservation.pool_id!r} "
                    "were reclaimed or voided before they could be issued"
                )
        record_reissues(conn, mailing_id, reissues, now, refs)
        forget_other_refs(conn, mailing_id, recorded)


def forget_other_refs(conn: Connection, mailing_id: str, refs: Mapping[str, str]) -> None:
    """Take a message's earlier reference off the issuances it shows again, when it changed.

    A re-run normally renders the same message (same codes, same
    reference). Rendered differently (the template changed, say), the codes
    it shows again were also in the earlier message: an event about either
    message alone cannot tell that nobody saw them, so no event gives them
    back any more (``mailing return`` still does). One read per chunk of a
    re-run; a write only for changed messages.
    """
    if not refs:
        return
    stale = [
        issuance_id
        for issuance_id, customer, ref in conn.execute(
            select(Issuance.id, Issuance.customer_id, Issuance.ref).where(
                one_of(conn, Issuance.customer_id, list(refs)),
                Issuance.mailing_id == mailing_id,
                Issuance.returned_at.is_(None),
                Issuance.ref.is_not(None),
            )
        )
        if ref != refs[customer]
    ]
    for start in range(0, len(stale), 500):
        conn.execute(
            update(Issuance).where(Issuance.id.in_(stale[start : start + 500])).values(ref=None)
        )


def record_reissues(
    conn: Connection,
    mailing_id: str,
    reissues: Sequence[tuple[str, str, int]],
    now: datetime,
    refs: Mapping[str, str] = _NO_REFS,
) -> None:
    insert_issuances(
        conn,
        [
            (
                pool_id,
                code_id,
                customer,
                mailing_id,
                IssuanceKind.REISSUE,
                0,
                False,
                now,
                refs.get(customer),
            )
            for pool_id, customer, code_id in reissues
        ],
    )


def release(engine: Engine, reservations: Sequence[Reservation]) -> None:
    """Put every still-reserved code of these reservations back into ``available``."""
    tokens = {r.token for r in reservations if r.exclusive}
    if not tokens:
        return
    with write_transaction(engine) as conn:
        free_held(conn, HeldCodes.token.in_(tokens))


def reclaim_scope(engine: Engine, scope: str) -> int:
    """Free reservations left by an earlier run of this scope; returns how many codes."""
    with write_transaction(engine) as conn:
        return free_held(conn, HeldCodes.scope == scope)


def reclaim_expired(engine: Engine, now: datetime | None = None) -> int:
    """Free reservations whose holder outlived its expiry (it died or hung)."""
    with write_transaction(engine) as conn:
        return free_held(conn, HeldCodes.until < (now or utcnow()))


def free_held(conn: Connection, condition: ColumnElement[bool]) -> int:
    """Close the open reservations that match and free their codes; returns how many.

    The ``held_codes`` rows go first, in one statement: on PostgreSQL a
    settle or another reclaim of the same reservation waits on them and then
    finds them gone, so a reservation's codes are either issued or freed,
    never both. Codes a void or a redemption took meanwhile no longer carry
    the token and are left as they are.
    """
    lock_held_in_order(conn, condition)
    closed = conn.execute(
        delete(HeldCodes).where(condition).returning(HeldCodes.token, HeldCodes.code_ids)
    ).all()
    by_token: dict[str, list[int]] = {}
    for token, code_ids in closed:
        by_token.setdefault(token, []).extend(json.loads(code_ids))
    return sum(release_reserved(conn, token, ids) for token, ids in by_token.items())
