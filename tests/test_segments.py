"""Segments: customers by how many codes they got, from which pools, since when."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update
from store_helpers import make_pool

from pools.claiming import claim
from pools.clock import utcnow
from pools.errors import PoolNotFound
from pools.models import Code, Issuance
from pools.segments import SegmentError, SegmentFormat, segment, write_segment


@pytest.fixture
def store(engine: Engine) -> Engine:
    """spring: m1 (2020) alice, bob, carol; m2 (now) alice, dave. summer: m3 alice, erin.

    bob also had his spring code shown again recently (a reissue, which counts nothing).
    """
    make_pool(engine, "spring", [f"S{i}" for i in range(9)])
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    make_pool(engine, "autumn", ["A1"])
    bob_code = claim(engine, "spring", "m1", ["alice", "bob", "carol"])["bob"]
    claim(engine, "spring", "m2", ["alice", "dave"])
    claim(engine, "summer", "m3", ["alice", "erin"])
    with engine.begin() as conn:
        conn.execute(
            update(Issuance)
            .where(Issuance.mailing_id == "m1")
            .values(issued_at=datetime(2020, 1, 10, 12))
        )
        bob_code_id = conn.execute(select(Code.id).where(Code.code == bob_code)).scalar_one()
        conn.execute(
            insert(Issuance).values(
                pool_id="spring",
                code_id=bob_code_id,
                customer_id="bob",
                mailing_id="m4",
                kind="reissue",
                slot=0,
                exclusive=False,
                issued_at=utcnow(),
            )
        )
    return engine


RECENT = date(2021, 1, 1)


#: (filters, expected ids); checked against one store, set up once.
CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({}, ["alice", "bob", "carol", "dave", "erin"]),
    ({"issued_from": ["spring"]}, ["alice", "bob", "carol", "dave"]),
    ({"issued_from": ["spring"], "min_issued": 2}, ["alice"]),
    ({"issued_from": ["spring"], "max_issued": 1}, ["bob", "carol", "dave"]),
    ({"issued_from": ["spring", "summer"], "min_issued": 3}, ["alice"]),
    ({"issued_from": ["spring", "summer", "spring"], "min_issued": 3}, ["alice"]),
    ({"issued_from": ["autumn"]}, []),
    ({"since": RECENT}, ["alice", "dave", "erin"]),
    ({"since": RECENT, "issued_from": ["spring"]}, ["alice", "dave"]),
    ({"since": datetime(2020, 1, 10, 12, 0, 1)}, ["alice", "dave", "erin"]),
    ({"since": datetime(2020, 1, 10, 12)}, ["alice", "bob", "carol", "dave", "erin"]),
    # 13:00 at UTC+1 is 12:00 UTC: the m1 issuances are included.
    (
        {"since": datetime(2020, 1, 10, 13, tzinfo=timezone(timedelta(hours=1)))},
        ["alice", "bob", "carol", "dave", "erin"],
    ),
    ({"since": datetime(2020, 1, 10, 12, 30, tzinfo=UTC)}, ["alice", "dave", "erin"]),
    # Known customers who never got a summer code.
    ({"issued_from": ["summer"], "max_issued": 0}, ["bob", "carol", "dave"]),
    (
        {"issued_from": ["spring"], "since": RECENT, "min_issued": 0, "max_issued": 0},
        ["bob", "carol", "erin"],
    ),
    ({"issued_from": ["autumn"], "min_issued": 0}, ["alice", "bob", "carol", "dave", "erin"]),
]


def test_segment_filters(store: Engine) -> None:
    for filters, expected in CASES:
        assert segment(store, **filters) == expected, filters


def test_segment_refuses_nonsense(store: Engine) -> None:
    with pytest.raises(PoolNotFound, match="'winter'"):
        segment(store, issued_from=["spring", "winter"])
    with pytest.raises(SegmentError, match="--min-issued 3 is more than --max-issued 1"):
        segment(store, min_issued=3, max_issued=1)
    with pytest.raises(SegmentError):
        segment(store, max_issued=-1)


def test_empty_store_has_empty_segments(engine: Engine) -> None:
    assert segment(engine) == []
    assert segment(engine, max_issued=0) == []


def test_output_formats() -> None:
    ids = ["alice", "bob", "o'hara, jr"]

    plain = io.StringIO()
    assert write_segment(ids, plain, SegmentFormat.IDS) == 3
    assert plain.getvalue() == "alice\nbob\no'hara, jr\n"

    table = io.StringIO(newline="")
    assert write_segment(iter(ids), table, SegmentFormat.CSV) == 3
    assert table.getvalue() == 'id\nalice\nbob\n"o\'hara, jr"\n'
    rows = list(csv.DictReader(io.StringIO(table.getvalue(), newline="")))
    assert [row["id"] for row in rows] == ids

    empty = io.StringIO()
    assert write_segment([], empty, SegmentFormat.CSV) == 0
    assert empty.getvalue() == "id\n"


def test_segment_written_as_recipients_file(store: Engine, tmp_path: Path) -> None:
    out = tmp_path / "follow-up.csv"
    with out.open("w", encoding="utf-8", newline="") as handle:
        write_segment(segment(store, issued_from=["summer"]), handle, SegmentFormat.CSV)
    assert out.read_text(encoding="utf-8") == "id\nalice\nerin\n"
