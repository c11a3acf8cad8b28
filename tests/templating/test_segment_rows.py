"""A segment as a follow-up's recipients file: the original rows, byte for byte.

The records of a recipients file read back exactly as written, whatever CSV
dialect or JSON Lines layout wrote them (a property test over generated
files); the rows of the customers in a segment come out in the file's own
order and bytes, across many slices; a file the render would refuse fails
before anything is written, and a named output appears whole or not at all.
Store tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event

from promomail.pools.after_sending.redemption import redeem
from promomail.pools.errors import ExportError, PoolNotFound
from promomail.pools.history.segments import SegmentFilters
from promomail.pools.identifiers import id_problem
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.clock import utcnow
from promomail.templating.errors import RecipientError
from promomail.templating.mailing import segment_rows as rows_module
from promomail.templating.mailing.recipients import RecipientRecords, read_recipients
from promomail.templating.mailing.segment_rows import segment_rows_file, write_segment_rows
from tests.support.store_helpers import make_pool

REMINDER = SegmentFilters(unredeemed_from=["welcome"])

# -- every record read back as written ------------------------------------------------

#: Any text a value may hold: commas, quotes, line breaks of every kind, any script.
_VALUES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
_IDS = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=10).filter(
    lambda i: id_problem(i) is None
)


_QUOTINGS: tuple[Literal[0, 1, 2], ...] = (csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC)


@st.composite
def _csv_files(draw: st.DrawFn) -> tuple[str, list[list[str]]]:
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    quoting = draw(st.sampled_from(_QUOTINGS))
    values = _VALUES
    if ending == "\n" and quoting == csv.QUOTE_MINIMAL:
        # Python's writer leaves a lone CR unquoted under LF line ends: no reader
        # could tell it from a line end, so no such file is a fair example.
        values = values.map(lambda v: v.replace("\r", ""))
    ids = draw(st.lists(_IDS, min_size=0, max_size=8, unique=True))
    rows = [[i, draw(values), draw(values)] for i in ids]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=ending, quoting=quoting)
    writer.writerows([["id", "name", "note, with a comma"], *rows])
    text = buffer.getvalue()
    cut: bool = draw(st.booleans())
    if rows and cut:
        text = text.rstrip("\r\n")  # no line end after the last record
    return text, rows


def _written(folder: Path, name: str, text: str, bom: bool) -> Path:
    path = folder / name
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8"))
    return path


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(written=_csv_files(), bom=st.booleans())
def test_csv_records_read_back_exactly_as_written(
    tmp_path: Path, written: tuple[str, list[list[str]]], bom: bool
) -> None:
    text, rows = written
    path = _written(tmp_path, "people.csv", text, bom)
    records = RecipientRecords(path)
    pieces = list(records)
    assert records.preamble.encode() + "".join(t for _, t in pieces).encode() == path.read_bytes()
    assert [r.id for r, _ in pieces] == [row[0] for row in rows]
    for (recipient, piece), row in zip(pieces, rows, strict=True):
        # Each record alone, under the header, is the same row: a file of some of them reads
        # back as the original did.
        alone = list(csv.reader(io.StringIO(records.preamble.lstrip("\ufeff") + piece, newline="")))
        assert alone[1] == row
        assert recipient.line >= 2


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), _VALUES)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(
        st.tuples(_IDS, st.dictionaries(st.sampled_from(["name", "n", "é"]), _SCALARS)),
        max_size=8,
        unique_by=lambda r: r[0],
    ),
    ends=st.lists(st.sampled_from(["\n", "\r\n", "\n\n", "\n  \n"]), min_size=8, max_size=8),
    bom=st.booleans(),
)
def test_json_lines_records_read_back_exactly_as_written(
    tmp_path: Path,
    records: list[tuple[str, dict[str, Any]]],
    ends: list[str],
    bom: bool,
) -> None:
    lines = [
        json.dumps({"id": i, **fields}, ensure_ascii=False) + end
        for (i, fields), end in zip(records, ends, strict=False)
    ]
    path = _written(tmp_path, "people.jsonl", "".join(lines), bom)
    reader = RecipientRecords(path)
    pieces = list(reader)
    assert reader.preamble == ("\ufeff" if bom else "")
    # Blank lines belong to no record; everything else is kept as written.
    expected = [line.split("\n", 1)[0] + "\n" for line in lines]
    assert [t for _, t in pieces] == expected
    assert [r.id for r, _ in pieces] == [i for i, _ in records]


def test_the_first_of_repeated_ids_is_kept_as_a_render_keeps_it(tmp_path: Path) -> None:
    path = _written(
        tmp_path, "people.csv", "id,name\r\nann,First\r\n ann ,Second\r\nbob,Bob\r\n", False
    )
    assert [(r.id, t) for r, t in RecipientRecords(path)] == [
        ("ann", "ann,First\r\n"),
        ("bob", "bob,Bob\r\n"),
    ]
    assert [r.id for r in read_recipients(path)] == ["ann", "bob"]


# -- the rows of a segment ----------------------------------------------------------

#: A recipients file as CRMs export them: a byte order mark, CR LF, quoted commas and
#: quotes, a line break inside a value, spaces around an id, a repeated id, any script.
DIRTY_CSV = (
    codecs.BOM_UTF8.decode()
    + "id,email,first_name,notes\r\n"
    + 'ann,ann@example.com,"Ann, the first","says ""hi"""\r\n'
    + "bob,bob@example.com,Bob,\r\n"
    + 'cat,cat@example.com,Cat,"two\r\nlines"\r\n'
    + " dan ,dan@example.com,Dan,spaces around the id\r\n"
    + "eve,eve@example.com,Ève,\u00e9\u4e2d\u6587\r\n"
    + "ann,other@example.com,Ann again,a repeat: the first row counts\r\n"
    + "\r\n"
    + "zed,zed@example.com,Zed,never sent anything"
)


def _issue(engine: Engine, customers: Sequence[str]) -> dict[str, str]:
    make_pool(engine, "welcome", [f"W-{i:04}" for i in range(len(customers) + 5)])
    return claim(engine, "welcome", "welcome-1", customers)


def _rows(engine: Engine, path: Path, filters: SegmentFilters = REMINDER) -> bytes:
    out = io.BytesIO()
    write_segment_rows(engine, path, filters, out)
    return out.getvalue()


def test_the_rows_of_a_dirty_file_are_kept_byte_for_byte(engine: Engine, tmp_path: Path) -> None:
    codes = _issue(engine, ["ann", "bob", "cat", "dan", "eve"])
    assert redeem(engine, codes["bob"], customer="bob", order="o-1").ok
    path = tmp_path / "people.csv"
    path.write_bytes(DIRTY_CSV.encode("utf-8"))

    written = _rows(engine, path)
    lines = DIRTY_CSV.encode().split(b"\r\n")
    expected = b"\r\n".join([lines[0], lines[1], lines[3], lines[4], lines[5], lines[6], b""])
    assert written == expected
    assert written.startswith(codecs.BOM_UTF8)
    # The follow-up reads it as the render reads the original: the same people, same values.
    follow_up = tmp_path / "follow-up.csv"
    follow_up.write_bytes(written)
    original = {r.id: r.fields for r in read_recipients(path)}
    assert {r.id: r.fields for r in read_recipients(follow_up)} == {
        c: original[c] for c in ("ann", "cat", "dan", "eve")
    }


def test_json_lines_rows_are_kept_byte_for_byte(engine: Engine, tmp_path: Path) -> None:
    codes = _issue(engine, ["1", "ann", "bob"])
    assert redeem(engine, codes["bob"], customer="bob", order="o-1").ok
    lines = [
        '{"id": 1, "first_name": "One", "vip": true}\n',
        '{"id":"bob","first_name":"Bob"}\r\n',
        "\n",
        '{"first_name": "Ann, \\"A\\"", "id": "ann", "note": "é\\nx"}\r\n',
        '{"id": "ann", "first_name": "repeat"}\n',
        '{"id": "zed"}',
    ]
    path = tmp_path / "people.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + "".join(lines).encode())
    assert _rows(engine, path) == codecs.BOM_UTF8 + (lines[0] + lines[3]).encode()


def test_many_slices_keep_the_file_order(engine: Engine, tmp_path: Path) -> None:
    # Ids in no sorted order, more than three slices, every third customer sent a code.
    people = [f"p{(i * 7919) % 1700:05}" for i in range(1700)]
    assert len(set(people)) == len(people)
    sent = people[::3]
    _issue(engine, sent)
    path = tmp_path / "people.csv"
    path.write_text(
        "id,first_name\n" + "".join(f"{p},Name {p}\n" for p in people), encoding="utf-8"
    )
    queried: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "issuances" in statement:
            queried.append(len(parameters) if isinstance(parameters, Sequence | dict) else 0)

    event.listen(engine, "before_cursor_execute", count)
    try:
        written = _rows(engine, path).decode()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert written == "id,first_name\n" + "".join(f"{p},Name {p}\n" for p in sent)
    # One query per slice, never one holding the whole file.
    assert len(queried) >= len(people) // rows_module.SLICE
    assert max(queried) < rows_module.SLICE + 50


def test_a_file_the_render_refuses_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    _issue(engine, ["ann", "bob"])
    path = tmp_path / "people.csv"
    path.write_text("id,first_name\nann,Ann\nbob,Bob\nbad,\x00\n", encoding="utf-8")
    out = io.BytesIO()
    with pytest.raises(RecipientError, match=r"people\.csv, line 4, column 2"):
        write_segment_rows(engine, path, REMINDER, out)
    assert out.getvalue() == b""
    target = tmp_path / "follow-up.csv"
    target.write_text("an older file\n", encoding="utf-8")
    with pytest.raises(RecipientError, match="line 4"):
        segment_rows_file(engine, path, REMINDER, target)
    assert target.read_text(encoding="utf-8") == "an older file\n"
    # No temporary file left behind beside it.
    assert sorted(p.name for p in tmp_path.glob("*.csv*")) == ["follow-up.csv", "people.csv"]

    with pytest.raises(PoolNotFound, match="'nope'"):
        write_segment_rows(engine, path, SegmentFilters(unredeemed_from=["nope"]), out)
    assert out.getvalue() == b""


def test_a_named_output_appears_whole_and_is_read_as_its_format(
    engine: Engine, tmp_path: Path
) -> None:
    _issue(engine, ["ann"])
    path = tmp_path / "people.csv"
    path.write_text("id,first_name\nann,Ann\nbob,Bob\n", encoding="utf-8")
    target = tmp_path / "follow-up.csv"
    report = segment_rows_file(engine, path, REMINDER, target)
    assert report.as_dict() == {
        "recipients_file": str(path),
        "recipients": 2,
        "rows": 1,
        "out": str(target),
    }
    assert target.read_text(encoding="utf-8") == "id,first_name\nann,Ann\n"
    with pytest.raises(ExportError, match=r"read this file as JSON Lines; give it the extension"):
        segment_rows_file(engine, path, REMINDER, tmp_path / "follow-up.jsonl")
    with pytest.raises(ExportError, match="does not exist"):
        segment_rows_file(engine, path, REMINDER, tmp_path / "no-such-folder" / "f.csv")
    # The file it was made from may be its target: it is replaced once complete.
    segment_rows_file(engine, path, REMINDER, path)
    assert path.read_text(encoding="utf-8") == "id,first_name\nann,Ann\n"


def test_expiring_rows(engine: Engine, tmp_path: Path) -> None:
    now = utcnow()
    make_pool(
        engine,
        "welcome",
        csv_text="code,available_till\n"
        f"SOON,{(now + timedelta(days=2)).isoformat(timespec='seconds')}\n"
        f"LATER,{(now + timedelta(days=40)).isoformat(timespec='seconds')}\n",
    )
    assert claim(engine, "welcome", "w", ["ann", "bob"]) == {"ann": "SOON", "bob": "LATER"}
    path = tmp_path / "people.csv"
    path.write_text("id\nbob\nann\n", encoding="utf-8")
    soon = SegmentFilters(unredeemed_from=["welcome"], expiring_within=timedelta(days=7))
    assert _rows(engine, path, soon) == b"id\nann\n"
    assert _rows(engine, path) == b"id\nbob\nann\n"
