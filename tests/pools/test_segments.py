"""Segments: customers by how many codes they got, from which pools, since when."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select, update

from promomail.pools.choices import SegmentFormat
from promomail.pools.errors import PoolNotFound, SegmentError
from promomail.pools.history.segments import segment, write_segment
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.clock import utcnow
from promomail.pools.store.models import Code, Issuance
from promomail.templating.errors import RecipientError
from promomail.templating.mailing.recipients import read_recipients
from tests.support.store_helpers import make_pool


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
    with pytest.raises(
        SegmentError,
        match=r"^min_issued is 3, more than max_issued 1$",
    ):
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


# -- segment files read back exactly ----------------------------------------------

#: Ids as a store may hold them (issued through the library or the service):
#: any text, quotes, commas, formulas, line breaks and all.
_IDS = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=12, unique=True)


def _written(ids: list[str], fmt: SegmentFormat, folder: Path) -> Path | None:
    """The segment file, or None when it was refused (then nothing was written)."""
    path = folder / f"segment-{uuid.uuid4().hex[:8]}.csv"
    out = io.StringIO(newline="")
    try:
        write_segment(ids, out, fmt)
    except SegmentError as exc:
        assert out.getvalue() == ""  # refused before anything was written
        assert any(repr(i) in str(exc) for i in ids)  # names the id
        return None
    path.write_text(out.getvalue(), encoding="utf-8", newline="")
    return path


def _a_recipient_id(candidate: str, folder: Path) -> bool:
    """Whether the recipients reader takes ``candidate`` as exactly that id.

    Asked of the reader itself, through a file the csv module quotes fully,
    so the segment writer's own rule is checked against it, not restated.
    """
    path = folder / f"probe-{uuid.uuid4().hex[:8]}.csv"
    with path.open("w", encoding="utf-8", errors="surrogatepass", newline="") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows([["id"], [candidate]])
    try:
        return [r.id for r in read_recipients(path)] == [candidate]
    except RecipientError:
        return False


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(ids=_IDS)
def test_a_csv_segment_reads_back_as_exactly_its_ids(tmp_path: Path, ids: list[str]) -> None:
    """``segment --format csv > f.csv`` then ``render --recipients f.csv``: the same people."""
    path = _written(ids, SegmentFormat.CSV, tmp_path)
    unreadable = not all(_a_recipient_id(i, tmp_path) for i in ids)
    if path is None:
        assert unreadable  # refused only the ids the reader could not give back
        return
    assert not unreadable
    assert [r.id for r in read_recipients(path)] == ids


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(ids=_IDS)
def test_an_ids_segment_reads_back_as_exactly_its_ids(tmp_path: Path, ids: list[str]) -> None:
    """One id per line: read back line by line, it gives exactly the ids, or was refused."""
    path = _written(ids, SegmentFormat.IDS, tmp_path)
    unwritable = any(i.splitlines() != [i] or not _a_recipient_id(i, tmp_path) for i in ids)
    if path is None:
        assert unwritable
        return
    assert not unwritable
    with path.open(encoding="utf-8") as handle:  # universal newlines, as any reader
        assert [line.removesuffix("\n") for line in handle] == ids
    # With a header line on top it is the csv format's recipients file too when no
    # id needs quoting.
    if not any(set(i) & {",", '"'} for i in ids):
        headed = tmp_path / f"headed-{path.name}"
        headed.write_text("id\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
        assert [r.id for r in read_recipients(headed)] == ids


def test_a_segment_with_an_id_that_cannot_read_back_is_refused_naming_it() -> None:
    for ids, fmt, named in (
        (["alice", "bob "], SegmentFormat.CSV, "'bob '"),
        (["alice", "two\nlines"], SegmentFormat.IDS, "'two\\nlines'"),
        (["alice", "\u2028sep"], SegmentFormat.IDS, "'\\u2028sep'"),
        # Quoting would carry it through csv, but no recipients file takes it as an id.
        (["alice", "two\nlines"], SegmentFormat.CSV, "'two\\nlines'"),
    ):
        out = io.StringIO()
        with pytest.raises(SegmentError, match=re.escape(named)):
            write_segment(ids, out, fmt)
        assert out.getvalue() == ""


def test_segment_files_are_never_neutralised_for_spreadsheets(tmp_path: Path) -> None:
    ids = ["=SUM(1)", "+1", "-1", "@x", "'q"]
    path = _written(ids, SegmentFormat.CSV, tmp_path)
    assert path is not None
    assert path.read_text(encoding="utf-8") == "id\n=SUM(1)\n+1\n-1\n@x\n'q\n"
    assert [r.id for r in read_recipients(path)] == ids
