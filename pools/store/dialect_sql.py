"""Every piece of SQL that differs between SQLite and PostgreSQL.

Claiming: PostgreSQL picks rows with ``SELECT … FOR UPDATE SKIP LOCKED`` in a
CTE, so concurrent claimers never wait on or double-take a row (an
``UPDATE … WHERE id IN (subquery LIMIT n)`` can claim more than n rows, see
PostgreSQL bug #15715). SQLite has no row locks; its writers are serialised by
``BEGIN IMMEDIATE``, so a plain ``UPDATE … WHERE id IN (SELECT … LIMIT n)
RETURNING`` is atomic. SQLAlchemy's ``with_for_update(skip_locked=True)``
silently does nothing on SQLite, which is why this is spelled out here.

The literal ``status = 'available'`` matters: both planners use the partial
claim index only when the query repeats its predicate verbatim.

Bulk loading: SQLite inserts a block of codes with one ``INSERT … SELECT``
over ``json_each``; PostgreSQL takes ``COPY`` into a temporary table and one
``INSERT … SELECT``. Settling a chunk of issuances is one statement over
arrays in the same way.
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
    Text,
    any_,
    bindparam,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from pools.store.db import is_postgres
from pools.store.models import NO_END

_CLAIMABLE = """
    pool_id = :pool_id AND status = 'available' AND issuable_until > :now
    AND (issue_start IS NULL OR issue_start <= :now)
    ORDER BY issuable_until, id
    LIMIT :n
"""

_SET = """
    status = :new_status, reserved_scope = :scope, reserved_token = :token,
    reserved_until = :until
"""

_TAKE_POSTGRES = text(
    f"""
    WITH picked AS (
        SELECT id FROM codes WHERE {_CLAIMABLE}
        FOR UPDATE SKIP LOCKED
    )
    UPDATE codes SET {_SET}
    FROM picked WHERE codes.id = picked.id
    RETURNING codes.id, codes.code, codes.issuable_until
    """
).bindparams(bindparam("now", type_=DateTime()), bindparam("until", type_=DateTime()))

_TAKE_SQLITE = text(
    f"""
    UPDATE codes SET {_SET}
    WHERE id IN (SELECT id FROM codes WHERE {_CLAIMABLE})
    RETURNING id, code, issuable_until
    """
).bindparams(bindparam("now", type_=DateTime()), bindparam("until", type_=DateTime()))


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
        return PromoCode(self.issuable_until, self.id, self.code, customer_id, slot)


def take_codes(
    conn: Connection,
    pool_id: str,
    n: int,
    *,
    now: datetime,
    new_status: str,
    scope: str | None = None,
    token: str | None = None,
    until: datetime | None = None,
) -> list[PromoCode]:
    """Move up to ``n`` issuable codes out of ``available``, soonest-expiring first."""
    if n <= 0:
        return []
    statement = _TAKE_POSTGRES if is_postgres(conn) else _TAKE_SQLITE
    result = conn.execute(
        statement,
        {
            "pool_id": pool_id,
            "now": now,
            "n": n,
            "new_status": new_status,
            "scope": scope,
            "token": token,
            "until": until,
        },
    )
    # The driver's own tuples: a Row object per code is measurable at this rate.
    rows = result.cursor.fetchall() if result.cursor is not None else []
    result.close()
    # RETURNING gives no order guarantee; hand codes out in claim order. The
    # rows are sorted as plain tuples (SQLite's fixed-width datetime text sorts
    # like the datetimes) and each distinct end of window is parsed once: a
    # chunk's codes mostly share one.
    found = sorted(rows, key=_CLAIM_ORDER)
    moments: dict[Any, datetime] = {}
    taken = []
    for code_id, code, until in found:
        moment = moments.get(until)
        if moment is None:
            moment = moments[until] = _as_datetime(until)
        taken.append(PromoCode(moment, code_id, code))
    return taken


_CLAIM_ORDER = itemgetter(2, 0)


def _as_datetime(value: Any) -> datetime:
    # Raw text() columns come back as strings from SQLite.
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


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


#: One code as the loader takes it: code, issue_start, issue_end,
#: available_from, available_till, issuable_until.
CodeRow = tuple[str, datetime | None, datetime | None, datetime | None, datetime | None, datetime]

_INCOMING = "code, issue_start, issue_end, available_from, available_till, issuable_until"


def insert_codes(
    conn: Connection,
    pool_id: str,
    batch_id: int,
    rows: Sequence[CodeRow] = (),
    plain: Sequence[str] = (),
) -> int:
    """Insert new codes into a pool, skipping any it already has; returns how many were new.

    A block goes into ``codes`` with one ``INSERT … SELECT`` (PostgreSQL
    from an unindexed temporary table filled by ``COPY``, SQLite straight
    from a JSON array): the per-row work left in Python is the smallest
    possible, and the index maintenance runs inside the database. ``plain``
    codes have no windows (a txt upload, generated codes) and skip the
    per-row date handling. Ids follow the input order, so codes are issued in
    file order.
    """
    if not rows and not plain:
        return 0
    raw = conn.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        if is_postgres(conn):
            _load_incoming_postgres(cursor, rows, plain)
            distinct = len(set(plain)) == len(plain) and len({r[0] for r in rows}) == len(rows)
            return _move_incoming_postgres(cursor, pool_id, batch_id, distinct)
        return _insert_codes_sqlite(conn, cursor, pool_id, batch_id, rows, plain)
    finally:
        cursor.close()


_MOVE_COLUMNS = "code, issue_start, issue_end, available_from, available_till"
# Without ON CONFLICT: a plain insert skips the speculative insertion that
# costs PostgreSQL about a sixth of the whole load per row.
_MOVE_NEW_POSTGRES = (
    f"INSERT INTO codes (pool_id, batch_id, status, redemptions, {_INCOMING}) "
    f"SELECT %s, %s, 'available', 0, {_MOVE_COLUMNS}, coalesce(issuable_until, %s) "
    "FROM incoming_codes ORDER BY seq"
)
_MOVE_INCOMING_POSTGRES = f"{_MOVE_NEW_POSTGRES} ON CONFLICT (pool_id, code) DO NOTHING"


def _move_incoming_postgres(cursor: Any, pool_id: str, batch_id: int, distinct: bool) -> int:
    """Move the staged codes into the pool; returns how many were new.

    A block of codes distinct among themselves is first tried with the plain
    insert, in a savepoint: new codes, the usual case, go in at the lowest
    cost. When the pool already has one of them (the same file uploaded
    again, a concurrent upload), the unique index refuses the insert, the
    savepoint undoes it, and the block is moved again with ``ON CONFLICT DO
    NOTHING``, as are blocks with repeats inside.
    """
    from psycopg.errors import UniqueViolation

    if distinct:
        cursor.execute("SAVEPOINT incoming_codes")
        try:
            cursor.execute(_MOVE_NEW_POSTGRES, (pool_id, batch_id, NO_END))
        except UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT incoming_codes")
        else:
            moved = int(cursor.rowcount)
            cursor.execute("RELEASE SAVEPOINT incoming_codes")
            return moved
    cursor.execute(_MOVE_INCOMING_POSTGRES, (pool_id, batch_id, NO_END))
    return int(cursor.rowcount)


def _sqlite_datetime(conn: Connection) -> Any:
    to_text = DateTime().dialect_impl(conn.dialect).bind_processor(conn.dialect)
    assert to_text is not None
    return to_text


_MOVE_INCOMING_SQLITE = (
    f"INSERT INTO codes (pool_id, batch_id, status, redemptions, {_INCOMING}) "
    f"SELECT ?, ?, 'available', 0, {_MOVE_COLUMNS}, coalesce(issuable_until, ?) "
    # The WHERE tells SQLite's parser that ON CONFLICT is not a join clause.
    "FROM incoming_codes WHERE true ORDER BY seq "
    "ON CONFLICT (pool_id, code) DO NOTHING"
)
_INSERT_PLAIN_CODES_SQLITE = (
    "INSERT INTO codes (pool_id, batch_id, status, redemptions, code, issuable_until) "
    "SELECT ?1, ?2, 'available', 0, value, ?3 FROM json_each(?4) WHERE true ORDER BY key "
    "ON CONFLICT (pool_id, code) DO NOTHING"
)


def _insert_codes_sqlite(
    conn: Connection,
    cursor: Any,
    pool_id: str,
    batch_id: int,
    rows: Sequence[CodeRow],
    plain: Sequence[str],
) -> int:
    """Insert the block in input order, skipping codes the pool already has.

    Plain codes go in as one JSON array (encoded in C, read by ``json_each``
    inside SQLite): no staging table to fill and copy, and no per-row
    parameter binding. Codes with windows go through an unindexed temporary
    table, which keeps their dates as bound parameters.
    """
    to_text = _sqlite_datetime(conn)
    if plain:
        cursor.execute(
            _INSERT_PLAIN_CODES_SQLITE,
            (pool_id, batch_id, to_text(NO_END), json.dumps(plain, ensure_ascii=False)),
        )
        return int(cursor.rowcount)
    cache: dict[datetime, str] = {}

    def convert(value: datetime | None) -> str | None:
        if value is None:
            return None
        text_value = cache.get(value)
        if text_value is None:
            text_value = cache[value] = to_text(value)
        return text_value

    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS incoming_codes (seq INTEGER PRIMARY KEY, {_INCOMING})"
    )
    cursor.execute("DELETE FROM incoming_codes")
    cursor.executemany(
        f"INSERT INTO incoming_codes ({_INCOMING}) VALUES (?, ?, ?, ?, ?, ?)",
        [(row[0], *map(convert, row[1:])) for row in rows],
    )
    cursor.execute(_MOVE_INCOMING_SQLITE, (pool_id, batch_id, to_text(NO_END)))
    return int(cursor.rowcount)


def _load_incoming_postgres(cursor: Any, rows: Sequence[CodeRow], plain: Sequence[str]) -> None:
    cursor.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_codes ("
        "seq bigserial, code text, issue_start timestamp, issue_end timestamp, "
        "available_from timestamp, available_till timestamp, issuable_until timestamp"
        ") ON COMMIT DROP"
    )
    cursor.execute("TRUNCATE incoming_codes")
    if plain:
        # COPY's text format as one string: validated codes hold no control
        # characters, so a backslash is all that needs escaping, and the
        # sequence numbers come from the table's default in the file's order.
        payload = "\n".join(plain)
        if "\\" in payload:
            payload = payload.replace("\\", "\\\\")
        with cursor.copy("COPY incoming_codes (code) FROM STDIN") as copy:
            copy.write(payload.encode())
            copy.write(b"\n")
    else:
        with cursor.copy(f"COPY incoming_codes (seq, {_INCOMING}) FROM STDIN") as copy:
            for seq, row in enumerate(rows):
                copy.write_row((seq, *row))


#: pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at
IssuanceRow = tuple[str, int, str, str, str, int, bool, datetime]

_INSERT_ISSUANCES = (
    "INSERT INTO issuances "
    "(pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
)


_INSERT_ISSUANCES_POSTGRES = (
    "INSERT INTO issuances "
    "(pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], "
    "%s::int[], %s::bool[], %s::timestamp[])"
)


def insert_issuances(conn: Connection, rows: Sequence[IssuanceRow]) -> None:
    """Record issuances with one driver-level executemany.

    This runs for every chunk of every render; skipping SQLAlchemy's per-row
    parameter processing keeps the database thread's share of the
    interpreter small, so rendering in the other thread is not held up.
    Driver errors are still wrapped (a unique violation is an IntegrityError).
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
    to_text = _sqlite_datetime(conn)
    stamps = {moment: to_text(moment) for moment in {r[7] for r in rows}}
    conn.exec_driver_sql(
        _INSERT_ISSUANCES.format(p="?"),
        [(*r[:4], str(r[4]), r[5], int(r[6]), stamps[r[7]]) for r in rows],
    )


#: A code handed out of a reservation: code id, customer id, slot.
HandedRow = tuple[int, str, int]

_ISSUE_RESERVED_POSTGRES = """
    WITH handed AS (
        SELECT * FROM unnest(%(ids)s::bigint[], %(customers)s::text[], %(slots)s::int[])
            AS h (code_id, customer_id, slot)
    ), marked AS (
        UPDATE codes SET status = 'issued', reserved_scope = NULL, reserved_token = NULL,
            reserved_until = NULL
        FROM handed
        WHERE codes.id = handed.code_id AND codes.pool_id = %(pool_id)s
            AND codes.status = 'reserved' AND codes.reserved_token = %(token)s
        RETURNING codes.id
    )
    INSERT INTO issuances
        (pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at)
    SELECT %(pool_id)s, handed.code_id, handed.customer_id, %(mailing_id)s, 'initial',
        handed.slot, true, %(now)s
    FROM handed JOIN marked ON marked.id = handed.code_id
    ORDER BY handed.customer_id COLLATE "C", handed.slot
"""

_MARK_RESERVED_SQLITE = (
    "UPDATE codes SET status = 'issued', reserved_scope = NULL, reserved_token = NULL, "
    "reserved_until = NULL "
    "WHERE id IN (SELECT value FROM json_each(?)) AND pool_id = ? "
    "AND status = 'reserved' AND reserved_token = ?"
)

_ISSUE_HANDED_SQLITE = (
    "INSERT INTO issuances "
    "(pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at) "
    "SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?, 'initial', "
    "json_extract(value, '$[2]'), 1, ? "
    "FROM json_each(?) ORDER BY 3, 6"
)


def issue_reserved(
    conn: Connection,
    pool_id: str,
    token: str,
    mailing_id: str,
    handed: Sequence[HandedRow],
    now: datetime,
) -> int:
    """Turn reserved codes into initial issuances; returns how many were still reserved.

    Each code is checked against the reservation (still ``reserved``, same
    token, same pool) while it is marked issued, and only codes that pass are
    recorded; when the answer is short of ``len(handed)`` the caller must roll
    back. The whole chunk is passed as one array (PostgreSQL: a single
    statement over ``unnest``; SQLite: ``json_each``), so the statement and its
    plan do not grow with the chunk and the Python side does no per-row
    parameter work. Issuances are inserted in customer order, as
    :func:`insert_issuances` does, so concurrent writers lock the mailing's
    unique index in the same order.
    """
    if not handed:
        return 0
    if is_postgres(conn):
        ids, customers, slots = (list(column) for column in zip(*handed, strict=True))
        result = conn.exec_driver_sql(
            _ISSUE_RESERVED_POSTGRES,
            {
                "ids": ids,
                "customers": customers,
                "slots": slots,
                "pool_id": pool_id,
                "token": token,
                "mailing_id": mailing_id,
                "now": now,
            },
        )
        return int(result.rowcount)
    ids_json = json.dumps([row[0] for row in handed])
    marked = int(conn.exec_driver_sql(_MARK_RESERVED_SQLITE, (ids_json, pool_id, token)).rowcount)
    if marked != len(handed):
        return marked
    conn.exec_driver_sql(
        _ISSUE_HANDED_SQLITE,
        (pool_id, mailing_id, _sqlite_datetime(conn)(now), json.dumps(handed)),
    )
    return marked


_RELEASE_RESERVED = (
    "UPDATE codes SET status = 'available', reserved_scope = NULL, reserved_token = NULL, "
    "reserved_until = NULL WHERE {ids} AND status = 'reserved' AND reserved_token = {p}"
)
_RELEASE_RESERVED_POSTGRES = _RELEASE_RESERVED.format(ids="id = ANY(%s)", p="%s")
_RELEASE_RESERVED_SQLITE = _RELEASE_RESERVED.format(
    ids="id IN (SELECT value FROM json_each(?))", p="?"
)


def release_reserved(conn: Connection, token: str, ids: Sequence[int]) -> int:
    """Put these codes of a reservation back into ``available``; returns how many were held."""
    if not ids:
        return 0
    if is_postgres(conn):
        result = conn.exec_driver_sql(_RELEASE_RESERVED_POSTGRES, (list(ids), token))
    else:
        result = conn.exec_driver_sql(_RELEASE_RESERVED_SQLITE, (json.dumps(list(ids)), token))
    return int(result.rowcount)


def one_of(conn: Connection, column: Any, values: Sequence[str]) -> Any:
    """``column IN (values)`` with the values sent as one parameter.

    An expanding ``IN`` renders a placeholder per value on every execution,
    Python work per row that a render pays thousands of times a chunk; one
    array (PostgreSQL ``= ANY``) or JSON text (SQLite ``json_each``, encoded
    in C) costs one parameter however many values it holds.
    """
    if is_postgres(conn):
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(Text())))
    listed: Any = select(literal_column("value")).select_from(
        func.json_each(bindparam(None, json.dumps(list(values)), type_=Text()))
    )
    return column.in_(listed.scalar_subquery())
