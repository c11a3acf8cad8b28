"""Rows sent as one parameter come back as the same rows, on both stores.

Every batch write of delivery state (a webhook's bounces, a send's accepted
messages) reads its rows through :class:`RowSet`: a value that changed on
the way (quotes, commas, line breaks, non-ASCII, big ids) would move or
return the wrong message.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, DateTime, Engine, Integer, Select, String, select

from promomail.pools.store.row_sets import RowSet, per_dialect

ROWS = RowSet("probe", ref=String(), count=Integer(), id=BigInteger())

#: PostgreSQL text holds no NUL; every other character travels.
TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=40)
ROW = st.tuples(TEXT, st.integers(-(2**31), 2**31 - 1), st.integers(-(2**63), 2**63 - 1))


@per_dialect
def _read_back(postgres: bool) -> Select[tuple[str, int, int]]:
    table = ROWS.table(postgres)
    return select(table.c.ref, table.c.count, table.c.id)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(ROW, max_size=30))
def test_rows_come_back_as_sent(engine: Engine, rows: list[tuple[str, int, int]]) -> None:
    with engine.connect() as conn:
        read = conn.execute(_read_back(conn), ROWS.bind(conn, rows)).all()
    assert Counter(tuple(row) for row in read) == Counter(rows)


def test_a_row_set_refuses_a_type_it_cannot_carry() -> None:
    with pytest.raises(TypeError, match="text and integers"):
        RowSet("when", at=DateTime())
