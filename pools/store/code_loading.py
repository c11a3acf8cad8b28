"""New codes into a pool, a block at a time, at the lowest cost each dialect allows.

SQLite inserts a block with one ``INSERT … SELECT`` over ``json_each``;
PostgreSQL copies it straight into ``codes`` with ``COPY`` (through a
temporary table and ``INSERT … ON CONFLICT`` only when the pool already has
one of the codes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from promomail.pools.store.db import is_postgres
from promomail.pools.store.dialect_sql import sqlite_datetime
from promomail.pools.store.models import NO_END

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

    A block goes into ``codes`` in one statement (PostgreSQL: ``COPY``
    straight into the table; SQLite: ``INSERT … SELECT`` over a JSON array):
    the per-row work left in Python is the smallest possible, and the index
    maintenance runs inside the database. ``plain`` codes have no windows (a
    txt upload, generated codes) and skip the per-row date handling; they
    hold no control characters (every caller validates or generates them).
    Ids follow the input order, so codes are issued in file order.
    """
    if not rows and not plain:
        return 0
    raw = conn.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        if is_postgres(conn):
            return _insert_codes_postgres(cursor, pool_id, batch_id, rows, plain)
        return _insert_codes_sqlite(conn, cursor, pool_id, batch_id, rows, plain)
    finally:
        cursor.close()


def _insert_codes_postgres(
    cursor: Any, pool_id: str, batch_id: int, rows: Sequence[CodeRow], plain: Sequence[str]
) -> int:
    """Copy the block into ``codes``; only when that meets a code the pool has, skip it.

    A block of codes distinct among themselves is first copied straight into
    the table, in a savepoint: new codes, the usual case, go in at the
    lowest cost (``COPY`` inserts a page of rows at a time, with one WAL
    record per page instead of one per row, and there is no staging table
    to write and read back). When the pool already has one of them (the
    same file uploaded again, a concurrent upload), the unique index refuses
    the copy, the savepoint undoes it, and the block is staged and moved
    with ``ON CONFLICT DO NOTHING``, as are blocks with repeats inside.
    """
    from psycopg.errors import UniqueViolation

    if len(set(plain)) == len(plain) and len({r[0] for r in rows}) == len(rows):
        cursor.execute("SAVEPOINT new_codes")
        try:
            _copy_new_codes_postgres(cursor, pool_id, batch_id, rows, plain)
        except UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT new_codes")
        else:
            cursor.execute("RELEASE SAVEPOINT new_codes")
            return len(rows) + len(plain)
    _load_incoming_postgres(cursor, rows, plain)
    cursor.execute(_MOVE_INCOMING_POSTGRES, (pool_id, batch_id, NO_END))
    return int(cursor.rowcount)


_COPY_NEW_PLAIN_POSTGRES = (
    "COPY codes (code, pool_id, batch_id, status, redemptions, issuable_until) FROM STDIN"
)
_COPY_NEW_ROWS_POSTGRES = (
    f"COPY codes ({_INCOMING}, pool_id, batch_id, status, redemptions) FROM STDIN"
)


class _CopyMoments(dict[datetime | None, str]):
    """COPY's text for each distinct moment (NULL for None), made on first use.

    A block's codes mostly share a few window ends, so the lines are built
    from look-ups that all but never miss.
    """

    def __missing__(self, moment: datetime | None) -> str:
        text_value = self[moment] = "\\N" if moment is None else moment.isoformat(" ")
        return text_value


def _copy_text(value: str) -> str:
    """A value as a field of COPY's text format."""
    for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        value = value.replace(char, escaped)
    return value


def _copy_new_codes_postgres(
    cursor: Any, pool_id: str, batch_id: int, rows: Sequence[CodeRow], plain: Sequence[str]
) -> None:
    # COPY's text format built by joins rather than a write_row per code
    # (2.5 µs each): every line is a code, its window if any, and the same
    # constant fields; the table's sequence numbers the lines in the order of
    # the block. A backslash is all a valid code can hold that needs escaping.
    codes = _copy_codes(plain or [row[0] for row in rows])
    tail = "\t".join(("", _copy_text(pool_id), str(batch_id), "available", "0"))
    if plain:
        tail = f"{tail}\t{NO_END.isoformat(' ')}\n"
        with cursor.copy(_COPY_NEW_PLAIN_POSTGRES) as copy:
            copy.write(tail.join(codes).encode())
            copy.write(tail.encode())
        return
    tail = f"{tail}\n"
    m = _CopyMoments()
    lines = [
        f"{code}\t{m[row[1]]}\t{m[row[2]]}\t{m[row[3]]}\t{m[row[4]]}\t{m[row[5]]}{tail}"
        for code, row in zip(codes, rows, strict=True)
    ]
    with cursor.copy(_COPY_NEW_ROWS_POSTGRES) as copy:
        copy.write("".join(lines).encode())


def _copy_codes(codes: Sequence[str]) -> Sequence[str]:
    """The codes as COPY text fields: only a backslash needs escaping in a valid code."""
    joined = "\n".join(codes)
    return joined.replace("\\", "\\\\").split("\n") if "\\" in joined else codes


_MOVE_COLUMNS = "code, issue_start, issue_end, available_from, available_till"
# Only for blocks that meet codes the pool has: ON CONFLICT's speculative
# insertion costs PostgreSQL about a sixth of the whole load per row.
_MOVE_INCOMING_POSTGRES = (
    f"INSERT INTO codes (pool_id, batch_id, status, redemptions, {_INCOMING}) "
    f"SELECT %s, %s, 'available', 0, {_MOVE_COLUMNS}, coalesce(issuable_until, %s) "
    "FROM incoming_codes ORDER BY seq ON CONFLICT (pool_id, code) DO NOTHING"
)


_MOVE_INCOMING_SQLITE = (
    f"INSERT INTO codes (pool_id, batch_id, status, redemptions, {_INCOMING}) "
    f"SELECT ?, ?, 'available', 0, {_MOVE_COLUMNS}, coalesce(issuable_until, ?) "
    # The WHERE tells SQLite's parser that ON CONFLICT is not a join clause.
    "FROM incoming_codes WHERE true ORDER BY seq "
    "ON CONFLICT (pool_id, code) DO NOTHING"
)
# No ORDER BY: json_each walks the array in order and the INSERT takes its
# rows as they come, whereas "ORDER BY key" made SQLite copy every block into
# a sorter first (tests/pools/test_imports.py checks the ids follow the file).
_INSERT_PLAIN_CODES_SQLITE = (
    "INSERT INTO codes (pool_id, batch_id, status, redemptions, code, issuable_until) "
    "SELECT ?1, ?2, 'available', 0, value, ?3 FROM json_each(?4) WHERE true "
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
    to_text = sqlite_datetime(conn)
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
