"""Per-chunk look-ups for rendering: last codes, reissues, per-customer slots."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, select

from pools.issuing.claiming import IssuedCode
from pools.store.models import Code, Issuance, IssuanceKind


def latest_codes(
    conn: Connection, pool_id: str, customer_ids: Sequence[str], *, exclude_mailing: str | None
) -> dict[str, IssuedCode]:
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
        r.customer_id: IssuedCode(r.customer_id, r.code_id, r.code) for r in conn.execute(query)
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
