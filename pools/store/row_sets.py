"""Many rows sent to the database as one bound parameter, read as a table.

A batch of per-row writes (a webhook's bounces, a send's accepted messages)
becomes one ``UPDATE … FROM`` or ``INSERT … SELECT`` over such a table
rather than an ``executemany`` of one statement a row: PostgreSQL gets one
array a column, read back by ``unnest``; SQLite one JSON array of rows
(encoded in C), read back by ``json_each``. The statement's text is the
same whatever the batch's size, so the driver parses it once (psycopg caches
no statement of more than 50 parameters, and a multi-row ``VALUES`` has a
placeholder per value).

Statements over a row set are worth building once per dialect
(:func:`per_dialect`): building one costs more than the database's work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Integer,
    String,
    Text,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

from promomail.pools.store.db import is_postgres

T = TypeVar("T")


class RowSet:
    """Rows of named, typed columns, bound as one parameter (or one per column).

    ``RowSet("marks", id=Integer(), reason=String())`` is a table ``marks``
    with columns ``id`` and ``reason``; :meth:`table` is what a statement
    selects from or joins, :meth:`bind` turns rows (tuples in column order)
    into the statement's parameters. Columns hold text and integers: JSON
    carries nothing else exactly.
    """

    def __init__(self, name: str, **columns: TypeEngine[Any]) -> None:
        for column_type in columns.values():
            if not isinstance(column_type, String | Integer):
                raise TypeError(f"a row set carries text and integers, not {column_type!r}")
        self.name = name
        self.columns = columns

    def table(self, postgres: bool) -> Any:
        """The rows as a table with :attr:`columns`, for the given dialect."""
        if postgres:
            arrays = (
                bindparam(self._parameter(column), type_=postgresql.ARRAY(column_type))
                for column, column_type in self.columns.items()
            )
            return func.unnest(*arrays).table_valued(*self.columns).render_derived(name=self.name)
        rows = func.json_each(bindparam(self.name, type_=String())).table_valued("value")
        fields = (
            func.json_extract(rows.c.value, f"$[{n}]", type_=column_type).label(column)
            for n, (column, column_type) in enumerate(self.columns.items())
        )
        return select(*fields).select_from(rows).subquery(self.name)

    def bind(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
        """The parameters that carry ``rows`` (each in column order) on ``conn``."""
        if not is_postgres(conn):
            return {self.name: json.dumps([list(row) for row in rows])}
        by_column = list(zip(*rows, strict=True)) if rows else [()] * len(self.columns)
        return {
            self._parameter(column): list(values)
            for column, values in zip(self.columns, by_column, strict=True)
        }

    def _parameter(self, column: str) -> str:
        return f"{self.name}_{column}"


def per_dialect(build: Callable[[bool], T]) -> Callable[[Connection], T]:
    """``build(postgres)`` made once per dialect, then looked up by connection."""
    built: dict[bool, T] = {}

    def for_connection(conn: Connection) -> T:
        postgres = is_postgres(conn)
        if postgres not in built:
            built[postgres] = build(postgres)
        return built[postgres]

    return for_connection


def one_of(conn: Connection, column: Any, values: Sequence[str] | Sequence[int]) -> Any:
    """``column IN (values)`` with the values sent as one parameter.

    An expanding ``IN`` renders a placeholder per value on every execution,
    Python work per row that a render pays thousands of times a chunk; one
    array (PostgreSQL ``= ANY``) or JSON text (SQLite ``json_each``, encoded
    in C) costs one parameter however many values it holds.
    """
    if is_postgres(conn):
        element = Integer() if isinstance(column.type, Integer) else Text()
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(element)))
    listed: Any = select(literal_column("value")).select_from(
        func.json_each(bindparam(None, json.dumps(list(values)), type_=Text()))
    )
    return column.in_(listed.scalar_subquery())
