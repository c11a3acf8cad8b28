"""Customer segments from the issuance log, written as a recipients file.

A customer's count is the number of initial issuances they received from the
given pools (every pool when none is given) at or after ``since``. Reissues
(a code shown again) do not count: they hand out nothing new.

``min_issued`` defaults to 1 (customers who were issued something), or to 0
when ``max_issued`` is 0. With a lower bound of 0 the candidates are every
customer the store knows, that is everyone ever issued a code from any pool,
so ``--issued-from spring --max-issued 0`` finds the known customers who
never got a spring code.

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
from datetime import date, datetime
from enum import StrEnum
from typing import TextIO

from sqlalchemy import Connection, Engine, and_, case, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from pools.admin.lookup import unknown_pool
from pools.errors import SegmentError
from pools.identifiers import id_problem
from pools.store.clock import to_utc_naive
from pools.store.db import read_transaction
from pools.store.models import Issuance, IssuanceKind, Pool


class SegmentFormat(StrEnum):
    #: One id per line, no header.
    IDS = "ids"
    #: CSV with the header ``id``: usable as ``--recipients`` of a mailing.
    CSV = "csv"


def _start_of(since: date | datetime) -> datetime:
    if isinstance(since, datetime):
        return to_utc_naive(since)
    return datetime(since.year, since.month, since.day)


def segment(
    engine: Engine,
    *,
    issued_from: Sequence[str] = (),
    min_issued: int | None = None,
    max_issued: int | None = None,
    since: date | datetime | None = None,
) -> list[str]:
    """The matching customer ids, sorted."""
    with read_transaction(engine) as conn:
        return list(
            iter_segment(
                conn,
                issued_from=issued_from,
                min_issued=min_issued,
                max_issued=max_issued,
                since=since,
            )
        )


def iter_segment(
    conn: Connection,
    *,
    issued_from: Sequence[str] = (),
    min_issued: int | None = None,
    max_issued: int | None = None,
    since: date | datetime | None = None,
    after: str | None = None,
    within: Collection[str] | None = None,
) -> Generator[str, None, None]:
    """The matching customer ids in sorted order, streamed from the database.

    ``after`` resumes the list after that id (keyset paging). ``within``
    narrows the store to those pools (a view limited to some pools): only
    their issuances count and only their customers are known.
    """
    default_low = 0 if max_issued == 0 else 1
    low = default_low if min_issued is None else min_issued
    if low < 0 or (max_issued is not None and max_issued < 0):
        raise SegmentError("must be 0 or more", "min_issued", "max_issued")
    if max_issued is not None and low > max_issued:
        raise SegmentError(
            f"{{min_issued}} is {low}, more than {{max_issued}} {max_issued}",
            "min_issued",
            "max_issued",
        )
    pools = list(dict.fromkeys(issued_from))
    if pools:
        known = set(conn.execute(select(Pool.id).where(Pool.id.in_(pools))).scalars())
        for pool_id in pools:
            if pool_id not in known:
                raise unknown_pool(conn, pool_id, within)

    # A returned code never reached the customer: it does not make them "issued".
    matching: list[ColumnElement[bool]] = [
        Issuance.kind == IssuanceKind.INITIAL,
        Issuance.returned_at.is_(None),
    ]
    if pools:
        matching.append(Issuance.pool_id.in_(pools))
    if since is not None:
        matching.append(Issuance.issued_at >= _start_of(since))
    # Grouped by customer, so skipping whole customers keeps every count intact.
    resume: list[ColumnElement[bool]] = [] if after is None else [Issuance.customer_id > after]
    if within is not None:
        resume.append(Issuance.pool_id.in_(within))

    if low >= 1:
        count = func.count().label("n")
        query = (
            select(Issuance.customer_id, count)
            .where(*matching, *resume)
            .group_by(Issuance.customer_id)
            .having(count >= low)
        )
        if max_issued is not None:
            query = query.having(count <= max_issued)
        query = query.order_by(Issuance.customer_id)
    else:
        # Every known customer, with the count of matching issuances (maybe 0).
        matched = func.coalesce(func.sum(case((and_(*matching), 1), else_=0)), 0)
        query = select(Issuance.customer_id, matched).where(*resume).group_by(Issuance.customer_id)
        if max_issued is not None:
            query = query.having(matched <= max_issued)
        query = query.having(matched >= literal(low)).order_by(Issuance.customer_id)

    # Closed with the generator, so a reader that stops early leaves no server cursor open.
    with conn.execution_options(stream_results=True, yield_per=1000).execute(query) as result:
        for row in result:
            yield row[0]


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
