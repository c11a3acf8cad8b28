"""What a customer of a per-customer pool holds now, so a render can top it up to N.

A customer's current codes are the codes initially issued to them from the
pool that are still usable: not redeemed, not void, not past their
``available_till``, and, in ``--require-issued`` pools with a validity
period, issued recently enough. A code that can no longer be redeemed is not
current, so the next ``client.promocodes(...)`` replaces it as it replaces a
redeemed one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Connection, or_, select

from promomail.pools.admin.lookup import unknown_pool
from promomail.pools.store.clock import utcnow
from promomail.pools.store.models import Code, CodeStatus, Issuance, IssuanceKind, Pool

#: Customer ids per query: far below every database's bound-parameter limit.
_CHUNK = 500


def current_codes(
    conn: Connection,
    pool_id: str,
    customer_ids: Iterable[str],
    *,
    now: datetime | None = None,
) -> dict[str, list[tuple[int, str]]]:
    """Each customer's current codes from the pool as (code id, code), oldest issue first.

    Every requested customer is in the answer, with an empty list when they
    hold nothing.
    """
    moment = now or utcnow()
    pool = conn.execute(
        select(Pool.require_issued, Pool.issued_valid_days).where(Pool.id == pool_id)
    ).first()
    if pool is None:
        raise unknown_pool(conn, pool_id)
    ids = list(dict.fromkeys(customer_ids))
    answer: dict[str, list[tuple[int, str]]] = {customer: [] for customer in ids}
    conditions = [
        Issuance.pool_id == pool_id,
        Issuance.kind == IssuanceKind.INITIAL,
        Issuance.returned_at.is_(None),
        Code.redemptions == 0,
        Code.status != CodeStatus.VOID,
        or_(Code.available_till.is_(None), Code.available_till > moment),
    ]
    if pool.require_issued and pool.issued_valid_days is not None:
        conditions.append(Issuance.issued_at > moment - timedelta(days=pool.issued_valid_days))
    seen: set[tuple[str, int]] = set()
    for start in range(0, len(ids), _CHUNK):
        rows = conn.execute(
            select(Issuance.customer_id, Code.id, Code.code)
            .join(Code, Code.id == Issuance.code_id)
            .where(*conditions, Issuance.customer_id.in_(ids[start : start + _CHUNK]))
            .order_by(Issuance.issued_at, Issuance.id)
        )
        for customer, code_id, code in rows:
            if (customer, code_id) not in seen:
                seen.add((customer, code_id))
                answer[customer].append((code_id, code))
    return answer
