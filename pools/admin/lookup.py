"""A pool id that does not exist, answered with the ids it was probably meant to be.

``pool show welcom`` should say ``did you mean 'welcome'?`` rather than
leave the user to list the pools. Suggestions come only from the pools the
asker can see: a view limited to some pools (a service token) must not learn
of the others through a suggestion.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection

from sqlalchemy import Connection, select

from pools.errors import PoolNotFound
from pools.store.models import Pool

#: Pool ids compared at most: pools are made by people, this is far beyond a
#: real store, and it bounds the work of one refusal.
MAX_CANDIDATES = 10_000
#: Suggestions named at most.
MAX_SUGGESTIONS = 3
#: How alike a suggestion must be (difflib's ratio): one or two typos in an id.
CUTOFF = 0.6


def close_pool_ids(pool_ref: str, candidates: Collection[str]) -> list[str]:
    """The candidates closest to ``pool_ref``, best first; case does not count."""
    by_folded: dict[str, str] = {}
    for candidate in candidates:
        by_folded.setdefault(candidate.casefold(), candidate)
    found = difflib.get_close_matches(
        pool_ref.casefold(), by_folded, n=MAX_SUGGESTIONS, cutoff=CUTOFF
    )
    return [by_folded[match] for match in found]


def unknown_pool(
    conn: Connection, pool_ref: str, within: Collection[str] | None = None
) -> PoolNotFound:
    """The refusal for ``pool_ref``, with the existing ids (of ``within``) close to it."""
    query = select(Pool.id).order_by(Pool.id).limit(MAX_CANDIDATES)
    if within is not None:
        query = query.where(Pool.id.in_(list(within)[:MAX_CANDIDATES]))
    candidates = conn.execute(query).scalars().all()
    return PoolNotFound(pool_ref, close_pool_ids(pool_ref, candidates))
