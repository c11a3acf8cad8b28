"""Code file parsers (txt, csv) and property tests of whole uploads on both databases.

The property tests never call the parser to find out what it should do: the
expected outcome of every line is computed here from the rules in SPEC.md §3.
"""

from __future__ import annotations

import csv
import io
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.choices import FileFormat, Whitespace
from promomail.pools.codes.files import (
    BLOCK_LINES,
    Block,
    format_for,
    parse_csv,
    parse_moment,
    parse_txt,
)
from promomail.pools.codes.imports import Upload, upload_codes
from promomail.pools.errors import ImportRejected, LineProblem, UnreadableFile
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import NO_END, Code

# --------------------------------------------------------------------------
# helpers


def txt(data: bytes, whitespace: Whitespace = Whitespace.REJECT) -> tuple[list[str], list[int]]:
    """Codes and the line numbers of the problems of a txt file."""
    return _flatten(list(parse_txt(io.BytesIO(data), whitespace)))


def _flatten(blocks: Sequence[Block]) -> tuple[list[str], list[int]]:
    codes = [c for b in blocks for c in b.codes] + [r[0] for b in blocks for r in b.rows]
    return codes, [p.line for b in blocks for p in b.problems]


def problems_of(data: bytes, whitespace: Whitespace = Whitespace.REJECT) -> list[LineProblem]:
    return [p for b in parse_txt(io.BytesIO(data), whitespace) for p in b.problems]


def csv_blocks(data: bytes, whitespace: Whitespace = Whitespace.REJECT) -> list[Block]:
    return list(parse_csv(io.BytesIO(data), whitespace))


def csv_rows(data: bytes) -> list[tuple[object, ...]]:
    return [row for b in csv_blocks(data) for row in b.rows]


def csv_problems(data: bytes) -> list[LineProblem]:
    return [p for b in csv_blocks(data) for p in b.problems]


# --------------------------------------------------------------------------
# txt


def test_txt_plain_lf_and_crlf() -> None:
    assert txt(b"AAA\nBBB\nCCC\n") == (["AAA", "BBB", "CCC"], [])
    assert txt(b"AAA\r\nBBB\r\nCCC") == (["AAA", "BBB", "CCC"], [])
    assert txt(b"AAA\nBBB\r\nCCC\r\n") == (["AAA", "BBB", "CCC"], [])


def test_txt_bom_is_ignored_only_at_the_start() -> None:
    assert txt(b"\xef\xbb\xbfAAA\nBBB\n") == (["AAA", "BBB"], [])
    assert txt(b"\xef\xbb\xbfAAA\r\nBBB\r\n") == (["AAA", "BBB"], [])
    # A BOM before leading whitespace does not hide the whitespace.
    assert txt(b"\xef\xbb\xbf AAA\nBBB\n") == (["BBB"], [1])
    assert txt(b"\xef\xbb\xbf AAA\nBBB\n", Whitespace.STRIP) == (["AAA", "BBB"], [])


def test_txt_whitespace_inside_a_code_is_part_of_it() -> None:
    assert txt(b"SPRING SALE\nA  B\n") == (["SPRING SALE", "A  B"], [])


@pytest.mark.parametrize("line", [b" AAA", b"AAA ", b"  AAA  ", b"AAA\xc2\xa0", b"\xe3\x80\x80AAA"])
def test_txt_leading_or_trailing_whitespace(line: bytes) -> None:
    data = b"OK1\n" + line + b"\nOK2\n"
    problems = problems_of(data)
    assert [p.line for p in problems] == [2]
    assert "whitespace" in problems[0].reason
    assert txt(data, Whitespace.STRIP)[0] == ["OK1", line.decode().strip(), "OK2"]
    assert txt(data, Whitespace.KEEP)[0] == ["OK1", line.decode(), "OK2"]


@pytest.mark.parametrize("policy", list(Whitespace))
def test_txt_empty_and_blank_lines_are_errors(policy: Whitespace) -> None:
    codes, lines = txt(b"AAA\n\nBBB\n   \nCCC\n", policy)
    assert codes == ["AAA", "BBB", "CCC"]
    assert lines == [2, 4]


def test_txt_final_newline_is_not_an_empty_line() -> None:
    assert txt(b"AAA\n") == (["AAA"], [])
    assert txt(b"AAA\n\n") == (["AAA"], [2])


@pytest.mark.parametrize(
    "bad", [b"A\x00B", b"A\x01B", b"A\tB", b"A\x1bB", b"A\x7fB", b"A\xc2\x85B", b"A\xe2\x80\xa8B"]
)
def test_txt_control_characters(bad: bytes) -> None:
    data = b"".join(b"GOOD%03d\n" % i for i in range(20)) + bad + b"\nLAST\n"
    problems = problems_of(data)
    assert [(p.line, p.reason) for p in problems] == [(21, "control character in code")]


def test_txt_lone_carriage_return_is_a_control_character() -> None:
    assert txt(b"AAA\rBBB\nCCC\n" + b"FILLER\n" * 5) == (["CCC"] + ["FILLER"] * 5, [1])


def test_txt_binary_file_is_refused_whole() -> None:
    with pytest.raises(UnreadableFile, match="binary"):
        txt(bytes(range(256)) * 40)
    with pytest.raises(UnreadableFile, match="binary"):
        txt(b"\x00" * 1000)
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x06\x00\x00"
    with pytest.raises(UnreadableFile, match="binary"):
        txt(png + bytes(200))


def test_txt_empty_file_is_refused() -> None:
    with pytest.raises(UnreadableFile, match="empty"):
        txt(b"")


def test_txt_invalid_utf8_names_the_line() -> None:
    codes, _ = txt(b"AAA\nB\xffB\nCCC\n\xc3\n")
    assert codes == ["AAA", "CCC"]
    problems = problems_of(b"AAA\nB\xffB\nCCC\n\xc3\n")
    assert [p.line for p in problems] == [2, 4]
    assert all("UTF-8" in p.reason for p in problems)
    assert "byte 2" in problems[0].reason


def test_txt_non_ascii_codes() -> None:
    assert txt("ÉTÉ-2024\n夏季\n😀😀\n".encode()) == (["ÉTÉ-2024", "夏季", "😀😀"], [])


def test_txt_length_limit_counts_characters() -> None:
    ok = "Ä" * 64  # 128 bytes, 64 characters
    codes, lines = txt(f"{ok}\n{'B' * 65}\n".encode())
    assert codes == [ok]
    assert lines == [2]


def test_txt_100_kb_line_is_one_error_and_the_rest_is_read() -> None:
    data = b"AAA\n" + b"X" * 100_000 + b"\nBBB\n"
    codes, lines = txt(data)
    assert codes == ["AAA", "BBB"]
    assert lines == [2]


def test_txt_line_longer_than_a_read_block() -> None:
    data = b"AAA\n" + b"X" * (3 << 20) + b"\r\nBBB\n" + b"Y" * 10_000
    codes, lines = txt(data)
    assert codes == ["AAA", "BBB"]
    assert lines == [2, 4]


def test_txt_line_numbers_across_blocks() -> None:
    lines = [f"C{i:06d}" for i in range(BLOCK_LINES * 2 + 10)]
    bad = BLOCK_LINES + 3
    lines[bad - 1] = " " + lines[bad - 1]
    blocks = list(parse_txt(io.BytesIO("\n".join(lines).encode())))
    assert sum(b.lines for b in blocks) == len(lines)
    assert [p.line for b in blocks for p in b.problems] == [bad]
    assert sum(len(b.codes) for b in blocks) == len(lines) - 1


def test_format_for_extension() -> None:
    assert format_for("codes.CSV", None) is FileFormat.CSV
    assert format_for("codes.txt", None) is FileFormat.TXT
    assert format_for("codes", None) is FileFormat.TXT
    assert format_for("codes.csv", "txt") is FileFormat.TXT


# --------------------------------------------------------------------------
# csv


@pytest.mark.parametrize("header", ["code", "Code", "Coupon", "Coupon Code", "coupon_code", "CODE"])
def test_csv_code_column_aliases(header: str) -> None:
    data = f"{header}\nAAA\nBBB\n".encode()
    assert [r[0] for r in csv_rows(data)] == ["AAA", "BBB"]


def test_csv_code_column_among_others_and_quoting() -> None:
    data = b'id,Coupon Code,note\n1,"A,B",x\n2,"Q""Q",y\n'
    assert [r[0] for r in csv_rows(data)] == ["A,B", 'Q"Q']


def test_csv_without_code_column_is_refused() -> None:
    with pytest.raises(UnreadableFile, match="no code column"):
        csv_blocks(b"voucher,issue_start\nAAA,2024-01-01\n")


def test_csv_empty_and_binary() -> None:
    with pytest.raises(UnreadableFile, match="empty"):
        csv_blocks(b"")
    with pytest.raises(UnreadableFile, match="binary"):
        csv_blocks(bytes(range(256)) * 40)


def test_csv_bom_and_crlf() -> None:
    data = b"\xef\xbb\xbfcode,available_till\r\nAAA,2030-01-01\r\nBBB,\r\n"
    rows = csv_rows(data)
    assert [r[0] for r in rows] == ["AAA", "BBB"]
    assert rows[0][4] == datetime(2030, 1, 2)
    assert rows[1][4] is None


@pytest.mark.parametrize(
    "spelling",
    [
        ("issue_start", "issue_end", "available_from", "available_till"),
        ("issue-start", "issue-end", "available-from", "available-till"),
        ("Issue Start", "Issue End", "Available From", "Available Till"),
        ("ISSUE-START", "Issue_End", "available from", "AVAILABLE_TILL"),
    ],
)
def test_csv_window_column_spellings(spelling: tuple[str, str, str, str]) -> None:
    header = ",".join(("code", *spelling))
    data = f"{header}\nAAA,2030-01-01T10:00,2030-02-01T10:00,2030-01-05,2030-03-01\n".encode()
    (row,) = csv_rows(data)
    assert row == (
        "AAA",
        datetime(2030, 1, 1, 10),
        datetime(2030, 2, 1, 10),
        datetime(2030, 1, 5),
        datetime(2030, 3, 2),  # a date-only end includes that whole day
        datetime(2030, 2, 1, 10),  # issuable until the earlier end
    )


def test_csv_date_only_end_includes_the_whole_day() -> None:
    assert parse_moment("2030-06-30", "issue_end") == datetime(2030, 7, 1)
    assert parse_moment("2030-06-30", "available_till") == datetime(2030, 7, 1)
    assert parse_moment("2030-06-30", "issue_start") == datetime(2030, 6, 30)
    assert parse_moment("2030-06-30", "available_from") == datetime(2030, 6, 30)
    # The basic ISO format is a date too.
    assert parse_moment("20300630", "issue_end") == datetime(2030, 7, 1)
    # A datetime is taken as it is.
    assert parse_moment("2030-06-30T00:00:00", "issue_end") == datetime(2030, 6, 30)


def test_csv_aware_datetimes_go_to_utc() -> None:
    assert parse_moment("2030-06-30T10:00:00+02:00", "issue_start") == datetime(2030, 6, 30, 8)
    assert parse_moment("2030-06-30T10:00:00Z", "issue_start") == datetime(2030, 6, 30, 10)
    assert parse_moment(" 2030-06-30 10:00 ", "issue_start") == datetime(2030, 6, 30, 10)


def test_csv_no_window_means_no_end() -> None:
    (row,) = csv_rows(b"code,issue_end\nAAA,\n")
    assert row == ("AAA", None, None, None, None, NO_END)


@pytest.mark.parametrize(
    "value", ["2030-13-01", "2030-02-30", "tomorrow", "30/06/2030", "2030-06-30T25:00", "1"]
)
def test_csv_bad_dates(value: str) -> None:
    data = f"code,issue_start\nAAA,2030-01-01\nBBB,{value}\nCCC,\n".encode()
    problems = csv_problems(data)
    assert [p.line for p in problems] == [3]
    assert "bad date" in problems[0].reason
    assert [r[0] for r in csv_rows(data)] == ["AAA", "CCC"]


def test_csv_window_must_not_be_empty() -> None:
    data = (
        b"code,issue_start,issue_end,available_from,available_till\n"
        b"AAA,2030-01-02,2030-01-01,,\n"
        b"BBB,,,2030-01-02T00:00,2030-01-01\n"
        b"CCC,2030-01-01,2030-01-01,,\n"  # a date-only end includes its day
        b"DDD,2030-01-01T00:00,2030-01-01T00:00,,\n"
        b"EEE,,,2030-01-01T23:59,2030-01-01\n"
    )
    assert [p.line for p in csv_problems(data)] == [2, 3, 5]
    assert [r[0] for r in csv_rows(data)] == ["CCC", "EEE"]


def test_csv_row_problems_name_their_lines() -> None:
    data = 'code,note\nAAA,x\n\n BBB,y\nCCC\nDDD,z,extra\nE\u0007E,w\n"F\nF",v\nGGG,u\n'.encode()
    problems = csv_problems(data)
    assert [p.line for p in problems] == [3, 4, 5, 6, 7, 9]
    assert [r[0] for r in csv_rows(data)] == ["AAA", "GGG"]


def test_csv_whitespace_policies() -> None:
    data = b"code\n AAA \nBBB\n"
    assert [p.line for p in csv_problems(data)] == [2]
    assert [r[0] for b in csv_blocks(data, Whitespace.STRIP) for r in b.rows] == ["AAA", "BBB"]
    assert [r[0] for b in csv_blocks(data, Whitespace.KEEP) for r in b.rows] == [" AAA ", "BBB"]


def test_csv_invalid_utf8_names_its_row() -> None:
    data = b"code,n\nAAA,1\nB\xffB,2\nCCC,3\nDDD,\xc3\n"
    assert [(p.line, p.reason) for p in csv_problems(data)] == [
        (3, "invalid UTF-8"),
        (5, "invalid UTF-8"),
    ]
    assert [r[0] for r in csv_rows(data)] == ["AAA", "CCC"]
    # Far into a big file (past the decoder's read-ahead) the line is still right.
    big = b"code\n" + b"".join(b"C%06d\n" % i for i in range(20_000)) + b"\xfe\nLAST\n"
    assert [p.line for p in csv_problems(big)] == [20_002]
    with pytest.raises(UnreadableFile, match="header"):
        csv_blocks(b"co\xffde\nAAA\n")


def test_csv_malformed_quoting_stops_with_a_problem() -> None:
    data = b'code,n\nAAA,1\n"BB"B,2\nCCC,3\n'
    problems = csv_problems(data)
    assert [p.line for p in problems] == [3]
    assert "malformed CSV" in problems[0].reason


def test_csv_lines_counted_in_blocks() -> None:
    body = "".join(f"C{i:06d}\n" for i in range(BLOCK_LINES + 5))
    blocks = csv_blocks(("code\n" + body).encode())
    assert [b.lines for b in blocks] == [BLOCK_LINES, 5]


# --------------------------------------------------------------------------
# property tests: whole uploads against an independent model of the rules

#: Lines that make every generated file clearly text (the binary guess looks
#: at the share of control bytes) and end it with a well-formed line.
FILLER = [f"FILLER-{i:03d}-LINE" for i in range(40)]

Line: TypeAlias = str | bytes
#: A stored code: code, issue_start, issue_end, available_from, available_till, issuable_until.
StoredRow: TypeAlias = tuple[
    str, datetime | None, datetime | None, datetime | None, datetime | None, datetime
]
WINDOW_COLUMNS = ("issue_start", "issue_end", "available_from", "available_till")


def _model_code(text: str, whitespace: Whitespace) -> str | None:
    """The code a line's text stands for under SPEC.md §3, or None if invalid."""
    if whitespace is Whitespace.REJECT and text != text.strip():
        return None
    if whitespace is Whitespace.STRIP:
        text = text.strip()
    if not text.strip():
        return None
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text):
        return None
    if len(text) > 64:
        return None
    return text


def _model_txt(lines: Sequence[Line], bom: bool, whitespace: Whitespace) -> list[str | None]:
    expected: list[str | None] = []
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                expected.append(None)
                continue
        else:
            text = line
        if number == 1:
            text = ("\ufeff" if bom else "") + text
            text = text.removeprefix("\ufeff")
        expected.append(_model_code(text, whitespace))
    return expected


_code_chars = st.characters(
    codec="utf-8", categories=("L", "M", "N", "P", "S", "Zs"), exclude_characters="\n\r"
)
_specials = st.sampled_from(
    ["\x00", "\x01", "\t", "\x0b", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff", " ", "\u00a0"]
)


@st.composite
def _one_special(draw: st.DrawFn) -> str:
    """A code-like text with one special character somewhere in it."""
    body = draw(st.text(_code_chars, max_size=8))
    at = draw(st.integers(0, len(body)))
    return body[:at] + draw(_specials) + body[at:]


_txt_lines: st.SearchStrategy[Line] = st.one_of(
    st.sampled_from(["SPRING-01", "SPRING-02", "summer 20", "ÉTÉ"]),  # frequent duplicates
    st.text(_code_chars, max_size=12),
    st.text(_code_chars, min_size=60, max_size=70),
    _one_special(),
    st.sampled_from([b"\xff", b"AB\x80CD", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"]),
    st.integers(100, 5000).map(lambda n: "L" * n),
    st.sampled_from(["", " ", "  PAD  ", "\u3000X"]),
)


def _txt_bytes(lines: Sequence[Line], bom: bool, crlf: Sequence[bool]) -> bytes:
    out = io.BytesIO()
    if bom:
        out.write(b"\xef\xbb\xbf")
    for line, cr in zip(lines, crlf, strict=True):
        out.write(line if isinstance(line, bytes) else line.encode("utf-8"))
        out.write(b"\r\n" if cr else b"\n")
    return out.getvalue()


def _new_pool(engine: Engine) -> str:
    pool_id = f"p-{uuid.uuid4().hex[:12]}"
    create_pool(engine, PoolSettings(pool_id, description="property"), pool_id=pool_id)
    return pool_id


def _stored(engine: Engine, pool_id: str) -> list[StoredRow]:
    with read_transaction(engine) as conn:
        rows = conn.execute(
            select(
                Code.code,
                Code.issue_start,
                Code.issue_end,
                Code.available_from,
                Code.available_till,
                Code.issuable_until,
            )
            .where(Code.pool_id == pool_id)
            .order_by(Code.id)
        )
        return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def _upload(
    engine: Engine,
    pool_id: str,
    data: bytes,
    fmt: FileFormat,
    whitespace: Whitespace,
    skip_invalid: bool,
) -> tuple[int, int, int, int] | None:
    """(lines, accepted, duplicates, rejected), or None when the upload was refused."""
    upload = Upload(f"upload.{fmt}", fmt, stream=io.BytesIO(data))
    try:
        (report,) = upload_codes(
            engine, pool_id, [upload], whitespace=whitespace, skip_invalid=skip_invalid
        )
    except ImportRejected:
        return None
    return report.lines, report.accepted, report.duplicates, report.rejected_count


#: The engine fixture is shared by all examples of a test; each example
#: works in a pool of its own, so no example sees another's codes.
_DB_PROPERTY = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_DB_PROPERTY
@given(
    first=st.lists(_txt_lines, max_size=15),
    second=st.lists(_txt_lines, max_size=25),
    bom=st.booleans(),
    crlf=st.data(),
    whitespace=st.sampled_from(list(Whitespace)),
    skip_invalid=st.booleans(),
)
def test_txt_upload_property(
    engine: Engine,
    first: list[Line],
    second: list[Line],
    bom: bool,
    crlf: st.DataObject,
    whitespace: Whitespace,
    skip_invalid: bool,
) -> None:
    pool_id = _new_pool(engine)
    stored: list[str] = []
    for lines, skip in ((first, True), (second, skip_invalid)):
        lines = [*lines, *FILLER]
        endings = crlf.draw(st.lists(st.booleans(), min_size=len(lines), max_size=len(lines)))
        data = _txt_bytes(lines, bom, endings)
        expected = _model_txt(lines, bom, whitespace)
        valid = [code for code in expected if code is not None]
        new = [code for code in dict.fromkeys(valid) if code not in set(stored)]
        rejected = len(expected) - len(valid)

        before = _stored(engine, pool_id)
        outcome = _upload(engine, pool_id, data, FileFormat.TXT, whitespace, skip)
        if rejected and not skip:
            assert outcome is None
            assert _stored(engine, pool_id) == before
            continue
        assert outcome == (len(lines), len(new), len(valid) - len(new), rejected)
        line_count, accepted, duplicates, rejected_count = outcome
        assert line_count == accepted + duplicates + rejected_count
        stored.extend(new)
        assert [row[0] for row in _stored(engine, pool_id)] == stored


@dataclass(frozen=True)
class Cell:
    """A window cell: its text and the moment it stands for as a start and as an end."""

    text: str
    start: datetime | None = None
    end: datetime | None = None
    valid: bool = True


_moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 30), timezones=st.none()
).map(lambda d: d.replace(microsecond=0))


def _date_only(moment: datetime) -> Cell:
    day = moment.replace(hour=0, minute=0, second=0)
    return Cell(day.date().isoformat(), day, day + timedelta(days=1))


def _minutes(moment: datetime) -> Cell:
    at = moment.replace(second=0)
    return Cell(moment.isoformat(sep=" ", timespec="minutes"), at, at)


def _aware(moment: datetime) -> Cell:
    utc = moment - timedelta(hours=2)
    return Cell(moment.isoformat() + "+02:00", utc, utc)


_date_cells: st.SearchStrategy[Cell] = st.one_of(
    st.just(Cell("")),
    _moments.map(lambda d: Cell(d.isoformat(), d, d)),
    _moments.map(_minutes),
    _moments.map(_date_only),
    _moments.map(_aware),
    st.sampled_from(["2030-13-01", "31.12.2030", "soon", "2030-02-30"]).map(
        lambda t: Cell(t, valid=False)
    ),
)

_HEADERS = {
    "code": ["code", "Code", "Coupon", "Coupon Code"],
    "issue_start": ["issue_start", "issue-start", "Issue Start"],
    "issue_end": ["issue_end", "issue-end", "Issue End"],
    "available_from": ["available_from", "available-from"],
    "available_till": ["available_till", "Available-Till"],
}
_ENDS = ("issue_end", "available_till")


@dataclass(frozen=True)
class CsvCase:
    columns: tuple[str, ...]
    header: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Cell, ...]], ...]


@st.composite
def _csv_cases(draw: st.DrawFn, max_rows: int) -> CsvCase:
    windows = draw(st.lists(st.sampled_from(list(_HEADERS)[1:]), unique=True, max_size=4))
    columns = ("code", *windows)
    header = tuple(draw(st.sampled_from(_HEADERS[c])) for c in columns)
    codes = draw(
        st.lists(
            st.one_of(
                st.sampled_from(["SPRING-01", "SPRING-02", "a,b", 'q"q']),
                st.text(_code_chars, max_size=12),
                _one_special(),
                st.sampled_from(["", " X", "Y\n", "multi\nline"]),
                st.text(_code_chars, min_size=62, max_size=66),
            ),
            max_size=max_rows,
        )
    )
    rows = tuple((code, tuple(draw(_date_cells) for _ in windows)) for code in codes)
    filler = tuple((code, tuple(Cell("") for _ in windows)) for code in FILLER)
    return CsvCase(columns, header, rows + filler)


def _csv_bytes(case: CsvCase) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(case.header)
    for code, cells in case.rows:
        assert isinstance(code, str)
        writer.writerow([code, *(cell.text for cell in cells)])
    return out.getvalue().encode("utf-8")


def _model_csv(case: CsvCase, whitespace: Whitespace) -> list[StoredRow | None]:
    expected: list[StoredRow | None] = []
    for code, cells in case.rows:
        text = _model_code(code, whitespace)
        if text is None or not all(cell.valid for cell in cells):
            expected.append(None)
            continue
        moments: dict[str, datetime | None] = dict.fromkeys(WINDOW_COLUMNS)
        for column, cell in zip(case.columns[1:], cells, strict=True):
            moments[column] = cell.end if column in _ENDS else cell.start
        start, end = moments["issue_start"], moments["issue_end"]
        if start is not None and end is not None and start >= end:
            expected.append(None)
            continue
        start, end = moments["available_from"], moments["available_till"]
        if start is not None and end is not None and start >= end:
            expected.append(None)
            continue
        ends = [m for m in (moments["issue_end"], moments["available_till"]) if m is not None]
        expected.append(
            (
                text,
                moments["issue_start"],
                moments["issue_end"],
                moments["available_from"],
                moments["available_till"],
                min(ends) if ends else NO_END,
            )
        )
    return expected


@_DB_PROPERTY
@given(
    first=_csv_cases(max_rows=10),
    second=_csv_cases(max_rows=20),
    whitespace=st.sampled_from(list(Whitespace)),
    skip_invalid=st.booleans(),
)
def test_csv_upload_property(
    engine: Engine,
    first: CsvCase,
    second: CsvCase,
    whitespace: Whitespace,
    skip_invalid: bool,
) -> None:
    pool_id = _new_pool(engine)
    stored: list[StoredRow] = []
    for case, skip in ((first, True), (second, skip_invalid)):
        expected = _model_csv(case, whitespace)
        valid = [row for row in expected if row is not None]
        have = {row[0] for row in stored}
        new: list[StoredRow] = []
        for row in valid:
            if row[0] not in have:
                have.add(row[0])
                new.append(row)
        rejected = len(expected) - len(valid)

        before = _stored(engine, pool_id)
        outcome = _upload(engine, pool_id, _csv_bytes(case), FileFormat.CSV, whitespace, skip)
        if rejected and not skip:
            assert outcome is None
            assert _stored(engine, pool_id) == before
            continue
        assert outcome == (len(case.rows), len(new), len(valid) - len(new), rejected)
        stored.extend(new)
        assert _stored(engine, pool_id) == stored
