"""Lists that can grow without bound, a page at a time, for front ends that page.

Keyset paging: a page ends with an opaque cursor naming the last record it
holds, and the next page starts after that record, so pages stay correct
and cheap while records are added, however deep the reader goes. A cursor
is URL-safe base64 of a small JSON value; a cursor that does not decode is
refused, naming it.

A ``pools`` argument narrows a list to those pool ids: the view of a
front-end user limited to some pools.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Unpack

from sqlalchemy import Connection, Engine, select

from promomail.pools.admin.lookup import close_ids
from promomail.pools.errors import InvalidCursor, MailingNotFound, PoolNotFound, PromomailError
from promomail.pools.history.customers import HistoryWindow, history_in
from promomail.pools.history.export import COLUMNS, check_filters, issuance_query, issuance_values
from promomail.pools.history.segments import SegmentCriteria, SegmentFilters, iter_segment
from promomail.pools.identifiers import MAX_CURSOR_LENGTH
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Code, Issuance

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next: str | None
    #: Further fields of the document (e.g. the customer a history belongs to).
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.extra, "items": self.items, "next": self.next}


def encode_cursor(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: Record ids are 64-bit integers in both stores: a larger number in a cursor
#: cannot name a record (and SQLite refuses to bind it).
_MAX_ID = 2**63 - 1


def decode_cursor(cursor: str, kind: type) -> Any:
    """The value inside ``cursor``, which must be of ``kind``.

    Total: whatever the text, the answer is the value or :class:`InvalidCursor`.
    A cursor is the client's text, so the value is checked for everything the
    store could refuse later (a number beyond 64 bits, a string no database
    can hold) before it reaches a query.
    """
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor(cursor[:40] + "…")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        # Strictly: characters outside the alphabet are an error, not skipped.
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeError, RecursionError) as exc:
        raise InvalidCursor(cursor) from exc
    if not isinstance(value, kind) or not _storable(value):
        raise InvalidCursor(cursor)
    return value


def _storable(value: Any) -> bool:
    """Whether a decoded cursor value is one a list could have given out."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value <= _MAX_ID
    if isinstance(value, str):
        # A lone surrogate cannot be encoded for the driver, a NUL not stored in PostgreSQL.
        return "\x00" not in value and not any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, list):
        return all(isinstance(item, int) and _storable(item) for item in value)
    return False


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise PromomailError(f"limit {limit} is not between 1 and {MAX_LIMIT}")
    return limit


def _check_pools(named: Sequence[str], pools: Collection[str] | None) -> None:
    """A pool outside the caller's view is unknown to them, like a pool that does not exist."""
    if pools is None:
        return
    for pool_id in named:
        if pool_id not in pools:
            raise PoolNotFound(pool_id, close_ids(pool_id, pools))


def issuance_page(
    engine: Engine,
    *,
    pool: str | None = None,
    mailing: str | None = None,
    pools: Collection[str] | None = None,
    after: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page:
    """The issuance log, as ``export issuances`` writes it, one page of records."""
    check_limit(limit)
    _check_pools([pool] if pool is not None else [], pools)
    start = decode_cursor(after, int) if after is not None else 0
    query = issuance_query(pool=pool, mailing=mailing).where(Issuance.id > start).limit(limit + 1)
    if pools is not None:
        query = query.where(Issuance.pool_id.in_(pools))
    with read_transaction(engine) as conn:
        check_filters(conn, pool, mailing, within=pools)
        if pools is not None and mailing is not None and mailing not in _mailings_of(conn, pools):
            raise MailingNotFound(mailing)
        rows = conn.execute(query).all()
    shown = rows[:limit]
    # Empty cells of the CSV are missing values in JSON.
    items = [
        {key: value or None for key, value in zip(COLUMNS, issuance_values(row), strict=True)}
        for row in shown
    ]
    more = len(rows) > limit
    return Page(items, encode_cursor(shown[-1].id) if more and shown else None)


def segment_page(
    engine: Engine,
    *,
    pools: Collection[str] | None = None,
    after: str | None = None,
    limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
    **criteria: Unpack[SegmentCriteria],
) -> Page:
    """Customer ids of a segment (as ``segment``), one page; narrowed to ``pools`` if given."""
    check_limit(limit)
    _check_pools([*criteria.get("issued_from", ()), *criteria.get("unredeemed_from", ())], pools)
    start = decode_cursor(after, str) if after is not None else None
    filters = SegmentFilters(**criteria)
    if pools is not None and filters.counts and not filters.issued_from:
        # Counted over the view's own pools: the others do not exist for it.
        if not pools:
            return Page([], None)
        filters = replace(filters, issued_from=sorted(pools))
    ids: list[str] = []
    with read_transaction(engine) as conn:
        matching = iter_segment(conn, filters, now=now, after=start, within=pools, limit=limit + 1)
        with closing(matching):
            for customer_id in matching:
                ids.append(customer_id)
                if len(ids) > limit:
                    break
    more = len(ids) > limit
    shown = ids[:limit]
    return Page(shown, encode_cursor(shown[-1]) if more else None)


def customer_page(
    engine: Engine,
    customer_id: str,
    *,
    pools: Collection[str] | None = None,
    after: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page:
    """A customer's history (as ``customer``): ``items`` are issuances, ``redemptions`` beside.

    Each page holds up to ``limit`` issuances and up to ``limit`` redemptions;
    the cursor remembers where each list stopped.
    """
    check_limit(limit)
    if after is not None:
        position = decode_cursor(after, list)
        if len(position) != 2:
            raise InvalidCursor(after)
        after_issuance, after_redemption = position
    else:
        after_issuance = after_redemption = 0
    window = HistoryWindow(pools, after_issuance, after_redemption, limit + 1)
    with read_transaction(engine) as conn:
        history = history_in(conn, customer_id, window)
    issuances = history.issuances[:limit]
    redemptions = history.redemptions[:limit]
    more = len(history.issuances) > limit or len(history.redemptions) > limit
    cursor = None
    if more:
        cursor = encode_cursor(
            [
                issuances[-1].record_id if issuances else after_issuance,
                redemptions[-1].record_id if redemptions else after_redemption,
            ]
        )
    return Page(
        [i.as_dict() for i in issuances],
        cursor,
        {"customer": customer_id, "redemptions": [r.as_dict() for r in redemptions]},
    )


def code_pools(engine: Engine, code: str) -> list[str]:
    """The ids of the pools holding this exact code string."""
    with read_transaction(engine) as conn:
        return list(
            conn.execute(select(Code.pool_id).where(Code.code == code).order_by(Code.pool_id))
            .scalars()
            .all()
        )


def _mailings_of(conn: Connection, pools: Collection[str]) -> set[str]:
    query = select(Issuance.mailing_id).where(Issuance.pool_id.in_(pools)).distinct()
    return set(conn.execute(query).scalars())
