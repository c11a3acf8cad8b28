"""Every piece of SQL that differs between SQLite and PostgreSQL.

Claiming: PostgreSQL picks rows with ``SELECT … FOR UPDATE SKIP LOCKED`` in a
CTE, so concurrent claimers never wait on or double-take a row (an
``UPDATE … WHERE id IN (subquery LIMIT n)`` can claim more than n rows, see
PostgreSQL bug #15715). SQLite has no row locks; its writers are serialised by
``BEGIN IMMEDIATE``, so reading the claimable rows and then updating them by
id is atomic (and cheaper for SQLite than ``UPDATE … RETURNING``).
SQLAlchemy's ``with_for_update(skip_locked=True)`` silently does nothing on
SQLite, which is why this is spelled out here.

A reservation writes each code row once, in its final ``issued`` state with
the reservation's token; settling it inserts the issuances and leaves the
code rows alone (see ``pools.store.models.HeldCodes``).

The literal ``status = 'available'`` matters: both planners use the partial
claim index only when the query repeats its predicate verbatim.

Bulk loading of codes is :mod:`pools.store.code_loading`. Settling a chunk of
issuances is one statement over arrays (PostgreSQL) or a JSON array (SQLite).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    DateTime,
    bindparam,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from promomail.pools.store.db import is_postgres
from promomail.pools.store.models import HeldCodes

# The guard on the pool lets a reservation skip reading the pool row first
# (a statement per chunk): codes come only out of an active single-use pool,
# and the caller looks at the pool only when nothing came out.
_CLAIMABLE = """
    pool_id = :pool_id AND status = 'available' AND issuable_until > :now
    AND (issue_start IS NULL OR issue_start <= :now)
    AND EXISTS (
        SELECT 1 FROM pools WHERE pools.id = :pool_id AND pools.status = 'active'
        AND NOT pools.multi_use
    )
    ORDER BY issuable_until, id
    LIMIT :n
"""

# One write per code: a reserved code is stored as ``issued`` with its
# reservation's token (see ``pools.store.models.HeldCodes``), so settling it later
# inserts its issuance and leaves the code row alone.
# The picked ids reach the UPDATE as one array, so each row is found by its
# primary key: joined to the CTE instead, the planner hashed the whole codes
# table for every chunk (a cost that grew with the pool, 2000-row chunks of a
# 100,000-code pool: about 15 us of server CPU per code).
_TAKE_POSTGRES_CTE = f"""
    WITH picked AS (
        SELECT id FROM codes WHERE {_CLAIMABLE}
        FOR UPDATE SKIP LOCKED
    ), taken AS (
        UPDATE codes SET status = 'issued', reserved_token = :token
        WHERE codes.id = ANY(ARRAY(SELECT id FROM picked))
        RETURNING codes.id, codes.code, codes.issuable_until
    )
"""
_TAKE_POSTGRES = text(
    f"{_TAKE_POSTGRES_CTE} SELECT id, code, issuable_until FROM taken"
).bindparams(bindparam("now", type_=DateTime()))
# A reservation opens its held_codes row in the same statement.
_RESERVE_POSTGRES = text(
    f"""{_TAKE_POSTGRES_CTE}, held AS (
        INSERT INTO held_codes (token, scope, pool_id, until, code_ids)
        SELECT :token, :scope, :pool_id, :until, json_agg(id)::text FROM taken
        HAVING count(*) > 0
    )
    SELECT id, code, issuable_until FROM taken
    """
).bindparams(bindparam("now", type_=DateTime()), bindparam("until", type_=DateTime()))

# SQLite: the write transaction began with BEGIN IMMEDIATE, so no other
# writer can take these rows between the read and the update. Reading first
# (in claim order, straight off the claim index) and updating by id costs
# SQLite less than ``UPDATE … RETURNING``, which buffers every returned row,
# and the codes come out already sorted.
_PICK_SQLITE = f"SELECT id, code, issuable_until FROM codes WHERE {_CLAIMABLE}"
_MARK_SQLITE = (
    "UPDATE codes SET status = 'issued', reserved_token = ? "
    "WHERE id IN (SELECT value FROM json_each(?)) AND status = 'available'"
)
_HOLD_SQLITE = (
    "INSERT INTO held_codes (token, scope, pool_id, until, code_ids) VALUES (?, ?, ?, ?, ?)"
)


class Hold(NamedTuple):
    """The reservation codes are taken for: its token, scope and expiry."""

    token: str
    scope: str
    until: datetime


class PromoCode(NamedTuple):
    """A code as the issuing side passes it around: taken from a pool, held by a
    customer, or both.

    Taken out of ``available`` it carries the end of its issuing window (the
    claim index's order); handed to a customer (:meth:`to`) it also names them
    and the slot. One type for reserved, handed-out and already-issued codes,
    so nothing converts one into another. A named tuple rather than a frozen
    dataclass: a render builds one per code it reserves and one per code it
    hands out, and a tuple is built for a third of the cost.
    """

    issuable_until: datetime | None
    id: int
    code: str
    customer_id: str = ""
    slot: int = 0

    def to(self, customer_id: str, slot: int = 0) -> PromoCode:
        """This code handed to ``customer_id`` (in ``slot`` of a per-customer pool)."""
        # tuple.__new__ directly: a named tuple's own __new__ is a Python call.
        return _new_tuple(PromoCode, (self.issuable_until, self.id, self.code, customer_id, slot))


def take_codes(
    conn: Connection, pool_id: str, n: int, *, now: datetime, hold: Hold | None = None
) -> list[PromoCode]:
    """Mark up to ``n`` issuable codes issued, soonest-expiring first.

    With ``hold`` the codes are reserved: they carry its token and a
    ``held_codes`` row lists them until the reservation is settled or freed.
    Without it the caller records their issuances in the same transaction.
    None come out of a pool that is missing, not active or multi-use.
    """
    if n <= 0:
        return []
    parameters: dict[str, Any] = {"pool_id": pool_id, "now": now, "n": n, "token": None}
    if hold is not None:
        parameters.update(token=hold.token, scope=hold.scope, until=hold.until)
    found: Sequence[Any]
    if is_postgres(conn):
        statement = _TAKE_POSTGRES if hold is None else _RESERVE_POSTGRES
        # RETURNING gives no order guarantee; hand codes out in claim order,
        # sorted as plain tuples.
        found = sorted(_driver_rows(conn, statement, parameters), key=_CLAIM_ORDER)
    else:
        # Straight to the driver, which takes the named parameters as they are.
        parameters["now"] = sqlite_datetime(conn)(now)
        found = _driver_rows(conn, _PICK_SQLITE, parameters)
        if found:
            ids = json.dumps([row[0] for row in found])
            marked = conn.exec_driver_sql(_MARK_SQLITE, (parameters["token"], ids)).rowcount
            assert marked == len(found), "codes changed inside a write transaction"
            if hold is not None:
                until = sqlite_datetime(conn)(hold.until)
                conn.exec_driver_sql(_HOLD_SQLITE, (hold.token, hold.scope, pool_id, until, ids))
    # Each distinct end of window is parsed once (a chunk's codes mostly share
    # one), and the named tuples are built by tuple.__new__ directly: half
    # the cost of calling the class, per code.
    moments = {until: _as_datetime(until) for until in {row[2] for row in found}}
    return [
        _new_tuple(PromoCode, (moments[until], code_id, code)) for code_id, code, until in found
    ]


_new_tuple = tuple.__new__
_CLAIM_ORDER = itemgetter(2, 0)


def _driver_rows(conn: Connection, statement: Any, parameters: dict[str, Any]) -> Sequence[Any]:
    """The driver's own tuples: a Row object per code is measurable at this rate."""
    if isinstance(statement, str):
        result = conn.exec_driver_sql(statement, parameters)
    else:
        result = conn.execute(statement, parameters)
    rows = result.cursor.fetchall() if result.cursor is not None else []
    result.close()
    return rows


def _as_datetime(value: Any) -> datetime:
    # Raw text() columns come back as strings from SQLite.
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def sqlite_datetime(conn: Connection) -> Any:
    """How SQLAlchemy writes a datetime into SQLite, for statements sent to the driver."""
    to_text = DateTime().dialect_impl(conn.dialect).bind_processor(conn.dialect)
    assert to_text is not None
    return to_text


def insert_if_absent(conn: Connection, table: Any, values: dict[str, Any]) -> bool:
    """``INSERT … ON CONFLICT DO NOTHING``; True when the row was new.

    A read-then-insert races on PostgreSQL (two shards of a new mailing
    starting at once both see no row); this waits for the other insert and
    then does nothing instead of failing on the primary key.
    """
    dialect_insert = postgresql.insert if is_postgres(conn) else sqlite.insert
    # RETURNING, not rowcount: SQLAlchemy reports rowcount -1 for this
    # statement on psycopg, which would read as "inserted".
    statement = dialect_insert(table).values(**values).on_conflict_do_nothing()
    return conn.execute(statement.returning(literal_column("1"))).first() is not None


#: pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at,
#: and the delivery reference of the message that showed the code (or None)
IssuanceRow = tuple[str, int, str, str, str, int, bool, datetime, str | None]

_INSERT_ISSUANCES = (
    "INSERT INTO issuances "
    "(pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at, ref) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
)


_INSERT_ISSUANCES_POSTGRES = (
    "INSERT INTO issuances "
    "(pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at, ref) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], "
    "%s::int[], %s::bool[], %s::timestamp[], %s::text[])"
)


def insert_issuances(conn: Connection, rows: Sequence[IssuanceRow]) -> None:
    """Record issuances with one driver-level executemany.

    This runs for every chunk of every render; skipping SQLAlchemy's per-row
    parameter processing keeps the database thread's share of the
    interpreter small, so rendering in the other thread is not held up.
    Driver errors still reach the store's boundary (a unique violation is a
    StoreConflict there).
    """
    if not rows:
        return
    # In the order of the (mailing, pool, customer, kind, slot) unique index:
    # two transactions recording overlapping customers (one mailing run twice
    # at once) then take its locks in the same order, and one waits for the
    # other instead of deadlocking on PostgreSQL.
    rows = sorted(rows, key=lambda r: (r[3], r[0], r[2], r[4], r[5]))
    if is_postgres(conn):
        # One statement over arrays: psycopg's executemany sends a statement
        # per row, which costs PostgreSQL several times more per issuance.
        columns = [list(column) for column in zip(*rows, strict=True)]
        columns[4] = [str(kind) for kind in columns[4]]
        conn.exec_driver_sql(_INSERT_ISSUANCES_POSTGRES, tuple(columns))
        return
    to_text = sqlite_datetime(conn)
    stamps = {moment: to_text(moment) for moment in {r[7] for r in rows}}
    conn.exec_driver_sql(
        _INSERT_ISSUANCES.format(p="?"),
        [(*r[:4], str(r[4]), r[5], int(r[6]), stamps[r[7]], r[8]) for r in rows],
    )


#: A code handed out of a reservation: code id, customer id, slot, and the
#: delivery reference of the message that showed it (or None).
HandedRow = tuple[int, str, int, str | None]

# The check against the reservation is a read: each handed-out code must still
# be ``issued`` under the reservation's token (a release, reclaim, void or
# redemption in between clears the token). Each code is looked up by its
# primary key (a lateral subquery per id): with ``id = ANY(...)`` and a status
# PostgreSQL's statistics call rare (taken before the render, when every code
# was available), the planner scanned every issued code through the batch
# index instead, for each chunk. PostgreSQL takes a share lock on
# those rows while it reads them, so a concurrent redemption waits for the
# settle or makes it fail, and the lock is the one the issuances' foreign key
# would take on the code rows anyway.
_ISSUE_RESERVED_POSTGRES = """
    WITH handed AS (
        SELECT * FROM unnest(
            %(ids)s::bigint[], %(customers)s::text[], %(slots)s::int[], %(refs)s::text[]
        ) AS h (code_id, customer_id, slot, ref)
    ), held AS (
        SELECT code.id FROM unnest(%(ids)s::bigint[]) AS wanted (id)
        CROSS JOIN LATERAL (
            SELECT id FROM codes
            WHERE codes.id = wanted.id AND pool_id = %(pool_id)s
                AND status = 'issued' AND reserved_token = %(token)s
            FOR SHARE
        ) AS code
    )
    INSERT INTO issuances
        (pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at, ref)
    SELECT %(pool_id)s, handed.code_id, handed.customer_id, %(mailing_id)s, 'initial',
        handed.slot, true, %(now)s, handed.ref
    FROM handed JOIN held ON held.id = handed.code_id
    ORDER BY handed.customer_id COLLATE "C", handed.slot
"""

_ISSUE_RESERVED_SQLITE = (
    "INSERT INTO issuances "
    "(pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at, ref) "
    "SELECT ?1, codes.id, json_extract(value, '$[1]'), ?2, 'initial', "
    "json_extract(value, '$[2]'), 1, ?3, json_extract(value, '$[3]') "
    "FROM json_each(?4) JOIN codes ON codes.id = json_extract(value, '$[0]') "
    "WHERE codes.pool_id = ?1 AND codes.status = 'issued' AND codes.reserved_token = ?5"
)


def issue_reserved(
    conn: Connection,
    pool_id: str,
    token: str,
    mailing_id: str,
    handed: Sequence[HandedRow],
    now: datetime,
) -> int:
    """Record initial issuances of reserved codes; returns how many were still reserved.

    The code rows were marked issued when reserved, so only the issuances
    are written. Each code is checked against the reservation (still
    ``issued``, same token, same pool) and only codes that pass are
    recorded; when the answer is short of ``len(handed)`` the caller must
    roll back. The whole chunk is passed as one array (PostgreSQL: a single
    statement over ``unnest``; SQLite: ``json_each``), so the statement and
    its plan do not grow with the chunk and the Python side does no per-row
    parameter work. On PostgreSQL issuances are inserted in customer order,
    as :func:`insert_issuances` does, so concurrent writers lock the
    mailing's unique index in the same order; SQLite serialises its writers,
    and the sort would cost it a fifth of a microsecond per code.
    """
    if not handed:
        return 0
    if is_postgres(conn):
        ids, customers, slots, refs = (list(column) for column in zip(*handed, strict=True))
        result = conn.exec_driver_sql(
            _ISSUE_RESERVED_POSTGRES,
            {
                "ids": ids,
                "customers": customers,
                "slots": slots,
                "refs": refs,
                "pool_id": pool_id,
                "token": token,
                "mailing_id": mailing_id,
                "now": now,
            },
        )
        return int(result.rowcount)
    result = conn.exec_driver_sql(
        _ISSUE_RESERVED_SQLITE,
        (pool_id, mailing_id, sqlite_datetime(conn)(now), json.dumps(handed), token),
    )
    return int(result.rowcount)


def locked_held_tokens(conn: Connection, condition: ColumnElement[bool]) -> list[str]:
    """The tokens of the matching ``held_codes`` rows, locked in (token, id) order.

    Every transaction that takes several of these rows (settle, reclaim, a new
    lease, void) takes them in this one order, so two of them wait for each
    other instead of deadlocking. On SQLite, one writer at a time, the lock
    clause is dropped and this is a plain read.
    """
    return list(
        conn.execute(
            select(HeldCodes.token)
            .where(condition)
            .order_by(HeldCodes.token, HeldCodes.id)
            .with_for_update()
        ).scalars()
    )


def lock_held_in_order(conn: Connection, condition: ColumnElement[bool]) -> None:
    """:func:`locked_held_tokens` for its locks alone: nothing to do on SQLite."""
    if is_postgres(conn):
        locked_held_tokens(conn, condition)


def close_reservations(conn: Connection, tokens: set[str]) -> None:
    """Delete the ``held_codes`` rows of these reservations (the start of a settle)."""
    if not tokens:
        return
    if is_postgres(conn):
        lock_held_in_order(conn, HeldCodes.token.in_(tokens))
        conn.exec_driver_sql("DELETE FROM held_codes WHERE token = ANY(%s)", (list(tokens),))
    else:
        conn.exec_driver_sql(
            "DELETE FROM held_codes WHERE token IN (SELECT value FROM json_each(?))",
            (json.dumps(list(tokens)),),
        )


_RELEASE_RESERVED = (
    "UPDATE codes SET status = 'available', reserved_token = NULL "
    "WHERE {ids} AND status = 'issued' AND reserved_token = {p}"
)
_RELEASE_RESERVED_POSTGRES = _RELEASE_RESERVED.format(ids="id = ANY(%s)", p="%s")
_RELEASE_RESERVED_SQLITE = _RELEASE_RESERVED.format(
    ids="id IN (SELECT value FROM json_each(?))", p="?"
)


def release_reserved(conn: Connection, token: str, ids: Sequence[int]) -> int:
    """Put these codes of a reservation back into ``available``; returns how many were held.

    A code issued under the token is still held when no issuance was
    recorded for it, which callers make sure of: they settle or free a
    reservation only after deleting its ``held_codes`` rows.
    """
    if not ids:
        return 0
    if is_postgres(conn):
        result = conn.exec_driver_sql(_RELEASE_RESERVED_POSTGRES, (list(ids), token))
    else:
        result = conn.exec_driver_sql(_RELEASE_RESERVED_SQLITE, (json.dumps(list(ids)), token))
    return int(result.rowcount)
