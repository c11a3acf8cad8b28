"""Customer segments from the issuance log, written as a recipients file.

A customer's count is the number of initial issuances they received from the
given pools (every pool when none is given) at or after ``since``. Reissues
(a code shown again) do not count: they hand out nothing new.

``min_issued`` defaults to 1 (customers who were issued something), or to 0
when ``max_issued`` is 0. With a lower bound of 0 the candidates are every
customer the store knows, that is everyone ever issued a code from any pool,
so ``--issued-from spring --max-issued 0`` finds the known customers who
never got a spring code.

``unredeemed_from`` (a reminder segment) keeps the customers who still hold
a live code from one of those pools, optionally expiring soon (the rules are
in :mod:`pools.history.reminders`); with count filters too, a customer must
meet both. Either way the answer streams from one query, sorted by id.

A segment file is read by programs (``render --recipients``, scripts), so it
holds the ids exactly as stored, never altered for spreadsheets (compare
:mod:`pools.history.export`). An id that a reader could not give back exactly is
refused, naming it, rather than written: in both formats an empty id or one
with leading or trailing whitespace (the recipients reader trims cells); in
``ids`` also one with a line break inside (use ``csv``, which quotes it).
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any, TextIO, TypedDict, Unpack

from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    Select,
    and_,
    bindparam,
    case,
    func,
    literal,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from promomail.pools.admin.lookup import unknown_pool
from promomail.pools.choices import SegmentFormat
from promomail.pools.errors import SegmentError
from promomail.pools.history.reminders import PoolRules, holders_query, pool_rules
from promomail.pools.identifiers import id_problem
from promomail.pools.store.clock import to_utc_naive, utcnow
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Issuance, IssuanceKind, Pool


def _start_of(since: date | datetime) -> datetime:
    if isinstance(since, datetime):
        return to_utc_naive(since)
    return datetime(since.year, since.month, since.day)


@dataclass(frozen=True)
class SegmentFilters:
    """What a segment asks for, checked when made: before anything is read or written.

    The filters combine: a customer is in the segment when their count of
    initial issuances (from ``issued_from``, since ``since``) is within the
    bounds, and, with ``unredeemed_from``, they hold a live code from one of
    those pools (:mod:`pools.history.reminders`), expiring within
    ``expiring_within`` when given.
    """

    issued_from: Sequence[str] = ()
    min_issued: int | None = None
    max_issued: int | None = None
    since: date | datetime | None = None
    unredeemed_from: Sequence[str] = ()
    expiring_within: timedelta | None = None

    def __post_init__(self) -> None:
        # A pool named twice is the pool once.
        object.__setattr__(self, "issued_from", tuple(dict.fromkeys(self.issued_from)))
        object.__setattr__(self, "unredeemed_from", tuple(dict.fromkeys(self.unredeemed_from)))
        low = self.lowest
        if low < 0 or (self.max_issued is not None and self.max_issued < 0):
            raise SegmentError("must be 0 or more", "min_issued", "max_issued")
        if self.max_issued is not None and low > self.max_issued:
            raise SegmentError(
                f"{{min_issued}} is {low}, more than {{max_issued}} {self.max_issued}",
                "min_issued",
                "max_issued",
            )
        if self.expiring_within is not None and not self.unredeemed_from:
            raise SegmentError(
                "{expiring_within} narrows a reminder segment: name the pools whose codes "
                "it is about with {unredeemed_from}",
                "expiring_within",
                "unredeemed_from",
            )

    @property
    def lowest(self) -> int:
        """The lower bound of the count: 1 (issued something) unless said, or 0 with an upper 0."""
        if self.min_issued is not None:
            return self.min_issued
        return 0 if self.max_issued == 0 else 1

    @property
    def counts(self) -> bool:
        """Whether issuances are counted: a count filter is given, or no reminder at all.

        A reminder alone needs no count: everyone holding a live code was
        issued it, so "issued something" adds nothing but a scan.
        """
        return bool(
            self.issued_from
            or self.min_issued is not None
            or self.max_issued is not None
            or self.since is not None
            or not self.unredeemed_from
        )


class SegmentCriteria(TypedDict, total=False):
    """:class:`SegmentFilters`' fields as keyword arguments, for the functions that take them."""

    issued_from: Sequence[str]
    min_issued: int | None
    max_issued: int | None
    since: date | datetime | None
    unredeemed_from: Sequence[str]
    expiring_within: timedelta | None


def segment(
    engine: Engine, *, now: datetime | None = None, **criteria: Unpack[SegmentCriteria]
) -> list[str]:
    """The matching customer ids, sorted (``now`` defaults to the store's clock)."""
    filters = SegmentFilters(**criteria)
    with read_transaction(engine) as conn:
        return list(iter_segment(conn, filters, now=now))


@dataclass(frozen=True)
class PreparedSegment:
    """A segment whose pools were found and whose clock was read: ready to query, often.

    Made once per listing, then asked for one page or one slice of a
    recipients file at a time, in the same transaction.
    """

    filters: SegmentFilters
    rules: Sequence[PoolRules]
    now: datetime
    within: Collection[str] | None

    def query(
        self,
        *,
        after: str | None = None,
        customers: Collection[str] | BindParameter[Any] | None = None,
    ) -> Select[Any]:
        """The matching ids, sorted; after ``after`` (paging), among ``customers`` when given."""
        f = self.filters
        if not f.counts:
            return holders_query(
                self.rules,
                self.now,
                f.expiring_within,
                after=after,
                customers=customers,
                ordered=True,
            )
        # A returned code never reached the customer: it does not make them "issued".
        matching: list[ColumnElement[bool]] = [
            Issuance.kind == IssuanceKind.INITIAL,
            Issuance.returned_at.is_(None),
        ]
        if f.issued_from:
            matching.append(Issuance.pool_id.in_(f.issued_from))
        if f.since is not None:
            matching.append(Issuance.issued_at >= _start_of(f.since))
        # Grouped by customer, so narrowing to whole customers keeps every count intact.
        narrowing: list[ColumnElement[bool]] = []
        if after is not None:
            narrowing.append(Issuance.customer_id > after)
        if customers is not None:
            narrowing.append(Issuance.customer_id.in_(customers))
        if self.within is not None:
            narrowing.append(Issuance.pool_id.in_(self.within))
        if f.unredeemed_from:
            holders = holders_query(
                self.rules, self.now, f.expiring_within, after=after, customers=customers
            )
            narrowing.append(Issuance.customer_id.in_(holders))

        low = f.lowest
        if low >= 1:
            count = func.count()
            query = (
                select(Issuance.customer_id)
                .where(*matching, *narrowing)
                .group_by(Issuance.customer_id)
                .having(count >= low)
            )
            if f.max_issued is not None:
                query = query.having(count <= f.max_issued)
            return query.order_by(Issuance.customer_id)
        # Every known customer, with the count of matching issuances (maybe 0).
        matched = func.coalesce(func.sum(case((and_(*matching), 1), else_=0)), 0)
        query = select(Issuance.customer_id).where(*narrowing).group_by(Issuance.customer_id)
        if f.max_issued is not None:
            query = query.having(matched <= f.max_issued)
        return query.having(matched >= literal(low)).order_by(Issuance.customer_id)

    def ids(
        self,
        conn: Connection,
        *,
        after: str | None = None,
        customers: Collection[str] | None = None,
        limit: int | None = None,
    ) -> Generator[str, None, None]:
        """The matching customer ids in sorted order, streamed from the database.

        With ``customers`` (a slice of a file), one statement serves every
        slice: built once, it is only bound to each slice's ids. ``limit``
        (a page) lets the database walk the customer index in order and stop,
        instead of grouping every customer after ``after``.
        """
        if customers is not None:
            query, parameters = self._among, {"customers": list(customers)}
        else:
            query, parameters = self.query(after=after), {}
        if limit is not None:
            query = query.limit(limit)
        # Closed with the generator, so a reader that stops early leaves no server cursor open.
        options = conn.execution_options(stream_results=True, yield_per=1000)
        with options.execute(query, parameters) as result:
            for row in result:
                yield row[0]

    @cached_property
    def _among(self) -> Select[Any]:
        return self.query(customers=bindparam("customers", expanding=True))


def prepare_segment(
    conn: Connection,
    filters: SegmentFilters,
    *,
    now: datetime | None = None,
    within: Collection[str] | None = None,
) -> PreparedSegment:
    """Check that the filters name existing pools (inside ``within``) and fix the clock.

    ``within`` narrows the store to those pools (a view limited to some
    pools): only their issuances count, only their customers are known,
    and a pool outside it does not exist.
    """
    if filters.issued_from:
        known = set(conn.execute(select(Pool.id).where(Pool.id.in_(filters.issued_from))).scalars())
        for pool_id in filters.issued_from:
            if pool_id not in known:
                raise unknown_pool(conn, pool_id, within)
    if within is not None:
        for pool_id in filters.unredeemed_from:
            if pool_id not in within:
                raise unknown_pool(conn, pool_id, within)
    rules = pool_rules(conn, filters.unredeemed_from) if filters.unredeemed_from else []
    moment = to_utc_naive(now) if now is not None else utcnow()
    return PreparedSegment(filters, rules, moment, within)


def iter_segment(
    conn: Connection,
    filters: SegmentFilters,
    *,
    now: datetime | None = None,
    after: str | None = None,
    within: Collection[str] | None = None,
    limit: int | None = None,
) -> Generator[str, None, None]:
    """The matching customer ids in sorted order, streamed from the database.

    ``after`` resumes the list after that id and ``limit`` ends it (keyset
    paging); ``within`` as :func:`prepare_segment` takes it.
    """
    prepared = prepare_segment(conn, filters, now=now, within=within)
    yield from prepared.ids(conn, after=after, limit=limit)


def check_writable(customer_id: str, fmt: SegmentFormat) -> None:
    """Raise SegmentError if ``customer_id`` would not read back exactly from a ``fmt`` file.

    The recipients reader refuses what :func:`pools.identifiers.id_problem`
    refuses (empty ids, surrounding whitespace, control characters, line
    breaks), so a segment never holds an id that its follow-up mailing would
    refuse or read back differently.
    """
    problem = id_problem(customer_id)
    if problem:
        raise SegmentError(
            f"customer id {customer_id!r} cannot be written to a {fmt.value} segment: {problem}"
        )


def write_segment(ids: Iterator[str] | Sequence[str], out: TextIO, fmt: SegmentFormat) -> int:
    """Write ids as ``fmt`` to ``out`` (opened with ``newline=''``); returns how many.

    Every id of a sequence is checked before anything is written; ids from
    an iterator are checked as they come.
    """
    if isinstance(ids, Sequence):
        for customer_id in ids:
            check_writable(customer_id, fmt)
    written = 0
    if fmt == SegmentFormat.CSV:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id"])
        for customer_id in ids:
            check_writable(customer_id, fmt)
            writer.writerow([customer_id])
            written += 1
    else:
        for customer_id in ids:
            check_writable(customer_id, fmt)
            out.write(customer_id + "\n")
            written += 1
    return written
