"""A pool or mailing id that does not exist, answered with the ids it was probably meant to be.

``pool show welcom`` should say ``did you mean 'welcome'?`` rather than
leave the user to list the pools. Suggestions come only from what the asker
can see: a view limited to some pools (a service token) must not learn of
the others, or of the mailings that drew from them, through a suggestion.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection

from sqlalchemy import Connection, Engine, select

from promomail.pools.errors import MailingNotFound, PoolNotFound
from promomail.pools.store.db import store_location
from promomail.pools.store.models import Mailing, Pool

#: Ids compared at most: pools and mailings are made by people, this is far
#: beyond a real store, and it bounds the work of one refusal.
MAX_CANDIDATES = 10_000
#: Suggestions named at most.
MAX_SUGGESTIONS = 3
#: How alike a suggestion must be (difflib's ratio): a typo or two in an id, not
#: two ids that merely share a few letters ("missing" and "spring" score 0.62).
CUTOFF = 0.75


def close_ids(ref: str, candidates: Collection[str]) -> list[str]:
    """The candidates closest to ``ref``, best first; case does not count."""
    by_folded: dict[str, str] = {}
    for candidate in candidates:
        by_folded.setdefault(candidate.casefold(), candidate)
    found = difflib.get_close_matches(ref.casefold(), by_folded, n=MAX_SUGGESTIONS, cutoff=CUTOFF)
    return [by_folded[match] for match in found]


def unknown_pool(
    conn: Connection, pool_ref: str, within: Collection[str] | None = None
) -> PoolNotFound:
    """The refusal for ``pool_ref``, with the existing ids (of ``within``) close to it."""
    query = select(Pool.id).order_by(Pool.id).limit(MAX_CANDIDATES)
    if within is not None:
        query = query.where(Pool.id.in_(list(within)[:MAX_CANDIDATES]))
    candidates = conn.execute(query).scalars().all()
    return PoolNotFound(pool_ref, close_ids(pool_ref, candidates))


def told_where(error: Exception, engine: Engine) -> str:
    """The error's message, naming the store a missing pool was looked for in.

    For the command line and the template tools, which show where their own
    store is; the HTTP API answers the plain message.
    """
    if isinstance(error, PoolNotFound):
        return error.in_store(store_location(engine))
    return str(error)


def unknown_mailing(conn: Connection, mailing_id: str) -> MailingNotFound:
    """The refusal for ``mailing_id``, with the recorded mailing ids close to it.

    Only for a view of the whole store: a limited view gets no suggestions.
    """
    query = select(Mailing.id).order_by(Mailing.started_at.desc()).limit(MAX_CANDIDATES)
    return MailingNotFound(mailing_id, close_ids(mailing_id, conn.execute(query).scalars().all()))
