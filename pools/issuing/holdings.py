"""What a chunk's customers already hold, read once per chunk of a render.

Rendering a chunk needs, per pool, what the mailing already gave these
customers (a re-run gives the same codes), each customer's last code from
before this mailing and whether this mailing already recorded showing it
again, and for per-customer pools the codes they hold now and the slots this
mailing used. :func:`chunk_holdings` answers all of it in one read
transaction, so a chunk costs one store visit whatever its template uses.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, func, select

from promomail.pools.issuing.claiming import existing_codes
from promomail.pools.issuing.per_customer import current_codes
from promomail.pools.store.db import read_transaction
from promomail.pools.store.dialect_sql import PromoCode
from promomail.pools.store.models import Code, Issuance, IssuanceKind
from promomail.pools.store.row_sets import one_of


@dataclass
class ChunkHoldings:
    """What a chunk's customers hold, per pool id; absent pools were not asked for."""

    #: Initial codes this mailing already gave (slot 0 of a pool without --per-customer).
    existing: dict[str, dict[str, PromoCode]] = field(default_factory=dict)
    #: Each customer's most recent code from before this mailing.
    latest: dict[str, dict[str, PromoCode]] = field(default_factory=dict)
    #: Customers this mailing already recorded a reissue for.
    reissued: dict[str, set[str]] = field(default_factory=dict)
    #: Per-customer pools: each customer's current codes as (code id, code).
    current: dict[str, dict[str, list[tuple[int, str]]]] = field(default_factory=dict)
    #: Per-customer pools: the highest slot this mailing gave each customer.
    slots: dict[str, dict[str, int]] = field(default_factory=dict)
    #: How many initial codes this mailing gave each customer back (absent: none).
    returned: dict[str, int] = field(default_factory=dict)


def chunk_holdings(
    engine: Engine,
    mailing_id: str,
    customer_ids: Sequence[str],
    *,
    issuing: Mapping[str, int | None],
    reissuing: Sequence[str],
    untouched: Collection[str] = (),
    returns: bool = False,
) -> ChunkHoldings:
    """Everything a chunk's render must know about its customers, in one read.

    ``issuing`` maps each pool the template issues from to its per-customer
    count (None for one code per customer); ``reissuing`` names the pools
    whose last code the template shows. ``untouched`` names pools the
    mailing had recorded nothing from when its run began (see
    :func:`untouched_pools`): what the mailing gave from them is not looked up.
    ``returns`` says the mailing had given codes back when its run began
    (:func:`has_returns`): only then are the chunk's returns counted.
    """
    held = ChunkHoldings()
    with read_transaction(engine) as conn:
        if returns:
            held.returned = returned_counts(conn, mailing_id, customer_ids)
        for pool_id, per_customer in issuing.items():
            fresh = pool_id in untouched
            if per_customer is None:
                held.existing[pool_id] = (
                    {} if fresh else existing_codes(conn, mailing_id, pool_id, customer_ids)
                )
            else:
                held.current[pool_id] = current_codes(conn, pool_id, customer_ids)
                held.slots[pool_id] = (
                    {} if fresh else slots_used(conn, mailing_id, pool_id, customer_ids)
                )
        for pool_id in reissuing:
            held.latest[pool_id] = latest_codes(
                conn, pool_id, customer_ids, exclude_mailing=mailing_id
            )
            held.reissued[pool_id] = (
                set()
                if pool_id in untouched
                else reissued_customers(conn, mailing_id, pool_id, customer_ids)
            )
    return held


def untouched_pools(conn: Connection, mailing_id: str, pool_ids: Iterable[str]) -> frozenset[str]:
    """The pools of ``pool_ids`` this mailing holds no issuance from (returned ones aside).

    A run that begins with a pool untouched (a mailing's first run) gives
    each of its recipients a code from it at most once: a worker renders a
    recipient once, and other workers and shards have other recipients. Its
    chunks need not ask what the mailing already gave them from that pool,
    and its preflight need not count who is served.
    """
    untouched = set()
    for pool_id in set(pool_ids):
        found = conn.execute(
            select(Issuance.id)
            .where(
                Issuance.mailing_id == mailing_id,
                Issuance.pool_id == pool_id,
                Issuance.returned_at.is_(None),
            )
            .limit(1)
        ).first()
        if found is None:
            untouched.add(pool_id)
    return frozenset(untouched)


def has_returns(conn: Connection, mailing_id: str) -> bool:
    """Whether the mailing ever gave a code back (a return, a cancel, a bounce)."""
    found = conn.execute(
        select(Issuance.id)
        .where(Issuance.mailing_id == mailing_id, Issuance.returned_at.is_not(None))
        .limit(1)
    ).first()
    return found is not None


def returned_counts(
    conn: Connection, mailing_id: str, customer_ids: Sequence[str]
) -> dict[str, int]:
    """How many initial codes the mailing gave each of these customers back.

    A message's delivery reference includes it, so the message after a
    return is named anew even when it shows the very code that came back.
    """
    if not customer_ids:
        return {}
    rows = conn.execute(
        select(Issuance.customer_id, func.count())
        .where(
            # The partial index on returned issuances serves this.
            Issuance.mailing_id == mailing_id,
            Issuance.returned_at.is_not(None),
            Issuance.kind == IssuanceKind.INITIAL,
            one_of(conn, Issuance.customer_id, customer_ids),
        )
        .group_by(Issuance.customer_id)
    )
    return {customer: int(n) for customer, n in rows}


def latest_codes(
    conn: Connection, pool_id: str, customer_ids: Sequence[str], *, exclude_mailing: str | None
) -> dict[str, PromoCode]:
    """Each customer's most recently issued code from the pool, in any mailing.

    Codes given by ``exclude_mailing`` (the mailing being rendered) do not
    count: "your last code" means the one from before this message.
    """
    if not customer_ids:
        return {}
    query = (
        select(Issuance.customer_id, Issuance.code_id, Code.code)
        .join(Code, Code.id == Issuance.code_id)
        .where(
            Issuance.pool_id == pool_id,
            Issuance.kind == IssuanceKind.INITIAL,
            Issuance.customer_id.in_(customer_ids),
            # A returned code went back to its pool: never show it again.
            Issuance.returned_at.is_(None),
        )
        .order_by(Issuance.issued_at, Issuance.id)
    )
    if exclude_mailing is not None:
        query = query.where(Issuance.mailing_id != exclude_mailing)
    # Ordered oldest first, so the newest row for a customer is the one kept.
    return {
        r.customer_id: PromoCode(None, r.code_id, r.code, r.customer_id)
        for r in conn.execute(query)
    }


def reissued_customers(
    conn: Connection, mailing_id: str, pool_id: str, customer_ids: Sequence[str]
) -> set[str]:
    """Customers this mailing already recorded a reissue for (a re-run)."""
    if not customer_ids:
        return set()
    rows = conn.execute(
        select(Issuance.customer_id).where(
            Issuance.mailing_id == mailing_id,
            Issuance.pool_id == pool_id,
            Issuance.kind == IssuanceKind.REISSUE,
            Issuance.customer_id.in_(customer_ids),
            Issuance.returned_at.is_(None),
        )
    )
    return {r.customer_id for r in rows}


def slots_used(
    conn: Connection, mailing_id: str, pool_id: str, customer_ids: Sequence[str]
) -> dict[str, int]:
    """The highest slot each customer's initial codes take in this mailing."""
    if not customer_ids:
        return {}
    rows = conn.execute(
        select(Issuance.customer_id, func.max(Issuance.slot))
        .where(
            Issuance.mailing_id == mailing_id,
            Issuance.pool_id == pool_id,
            Issuance.kind == IssuanceKind.INITIAL,
            Issuance.customer_id.in_(customer_ids),
            Issuance.returned_at.is_(None),
        )
        .group_by(Issuance.customer_id)
    )
    return {customer: int(slot) for customer, slot in rows}
