"""Reading code files (txt and csv) into validated codes, streaming.

Nothing here touches the database: a parser yields blocks of lines, each with
its valid codes (as the store takes them) and its :class:`LineProblem` list,
so an upload can store as it reads and still refuse the whole file at the end.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import BinaryIO

from promomail.pools.choices import FileFormat, Whitespace
from promomail.pools.display import counted
from promomail.pools.errors import LineProblem, UnreadableFile
from promomail.pools.local_files import LineTooLong, bounded_lines
from promomail.pools.store.clock import to_utc_naive
from promomail.pools.store.code_loading import CodeRow
from promomail.pools.store.models import CODE_MAX_LENGTH, NO_END

BLOCK_SIZE = 1 << 20
#: Lines handed to the store at a time.
BLOCK_LINES = 50_000
#: A line longer than this is not read into memory whole: it cannot be a code.
MAX_LINE_BYTES = 4096
#: Characters a line of a CSV of codes may hold: a line is read whole before it
#: is parsed, and one with no end (a stream that never sends one) must not be.
MAX_CSV_LINE_CHARS = 1 << 16
_BINARY_SAMPLE = 8192
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BOM = "\ufeff"
#: What undecodable bytes become with errors="surrogateescape".
_UNDECODABLE = re.compile("[\udc80-\udcff]")


@dataclass
class Block:
    """A run of lines: plain codes (txt), codes with windows (csv), problems."""

    lines: int = 0
    codes: list[str] = field(default_factory=list)
    rows: list[CodeRow] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)


def format_for(filename: str, explicit: str | None) -> FileFormat:
    if explicit:
        return FileFormat(explicit)
    return FileFormat.CSV if filename.lower().endswith(".csv") else FileFormat.TXT


#: The reason of a line refused for whitespace at its ends (``whitespace`` reject).
WHITESPACE_AT_ENDS = "leading or trailing whitespace"


def check_code(text: str, whitespace: Whitespace) -> tuple[str | None, str | None]:
    """(code, None) when valid, else (None, reason)."""
    if whitespace is Whitespace.STRIP:
        text = text.strip()
    # Printable ASCII that neither starts nor ends with a space is a valid code
    # under every policy: the common case, answered without the checks below.
    if (
        text.isascii()
        and text.isprintable()
        and 0 < len(text) <= CODE_MAX_LENGTH
        and text[0] != " "
        and text[-1] != " "
    ):
        return text, None
    elif whitespace is Whitespace.REJECT and text != text.strip():
        return None, WHITESPACE_AT_ENDS
    if not text.strip():
        # Also a line of spaces kept as it is: nobody can type a blank code.
        return None, "empty line" if not text else "blank code (only whitespace)"
    if _CONTROL.search(text):
        return None, "control character in code"
    if len(text) > CODE_MAX_LENGTH:
        return None, f"code is {len(text)} characters long; at most {CODE_MAX_LENGTH}"
    return text, None


def _looks_binary(sample: bytes) -> bool:
    if b"\x00" in sample[:_BINARY_SAMPLE] and sample.count(b"\x00") * 20 > len(sample):
        return True
    controls = sum(1 for b in sample[:_BINARY_SAMPLE] if b < 9 or 13 < b < 32)
    return controls * 10 > min(len(sample), _BINARY_SAMPLE)


def _line_runs(stream: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(number of the first line, its lines) for each block read from the stream.

    The lines come as they are in the file, joined by LF without the last
    one (a line keeps its CR, if any); None stands for one line that ran on
    past MAX_LINE_BYTES beyond a block, which is never held in memory whole.
    Nothing here works line by line: per-line Python work is what an upload
    of millions of codes cannot afford.
    """
    number = 0
    carry = b""
    too_long = False
    first = True
    while True:
        block = stream.read(BLOCK_SIZE)
        if first:
            first = False
            if not block:
                raise UnreadableFile("the file is empty: no codes")
            if _looks_binary(block):
                raise UnreadableFile("this looks like a binary file, not a list of codes")
        if not block:
            break
        data = carry + block if carry else block
        end = data.rfind(b"\n")
        if end < 0:
            carry = data
        else:
            carry = data[end + 1 :]
            lines: bytes | None = data[:end]
            if too_long:
                # The block's first line ends the over-long one.
                too_long = False
                number += 1
                yield number, None
                cut = data.find(b"\n")
                lines = data[cut + 1 : end] if cut < end else None
            if lines is not None:
                yield number + 1, lines
                number += lines.count(b"\n") + 1
        if len(carry) > MAX_LINE_BYTES:
            too_long = True
            carry = b""
    if carry or too_long:
        yield number + 1, None if too_long else carry


def _txt_problem(
    number: int, raw: bytes | None, whitespace: Whitespace
) -> tuple[str | None, LineProblem | None]:
    if raw is None:
        return None, LineProblem(number, f"line is longer than {MAX_LINE_BYTES} bytes: not a code")
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, LineProblem(number, f"invalid UTF-8 at byte {exc.start + 1}")
    if number == 1 and text.startswith(_BOM):
        text = text[1:]
    code, reason = check_code(text, whitespace)
    return code, None if code is not None else LineProblem(number, reason or "invalid")


# Anything in a block of lines that needs the line-by-line checks: control
# characters, whitespace at either end of a line (which also catches empty
# lines, as "\n" is whitespace), a lone carriage return.
_SUSPECT = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]|\s\n|\n\s|\s$")


#: Bytes that can be anywhere in a plain ASCII block: printable characters and LF.
_PLAIN_ASCII = bytes(range(0x20, 0x7F)) + b"\n"
_BOM_BYTES = _BOM.encode()


def _fast_block(data: bytes, first_number: int) -> list[str] | None:
    """All codes of a run of lines when every line is plainly valid, else None."""
    if first_number == 1 and data.startswith(_BOM_BYTES):
        data = data[len(_BOM_BYTES) :]
    if b"\r" in data:
        # CRLF line ends; the last line's CR has no LF after it in the block.
        data = data.replace(b"\r\n", b"\n")
        if data.endswith(b"\r"):
            data = data[:-1]
    if not data.translate(None, _PLAIN_ASCII):
        # Only printable ASCII and line ends: what is left to rule out is a
        # space at either end of a line and an empty line, all byte searches.
        if (
            not data
            or data.startswith((b" ", b"\n"))
            or data.endswith((b" ", b"\n"))
            or b" \n" in data
            or b"\n " in data
            or b"\n\n" in data
        ):
            return None
        codes = data.decode("ascii").split("\n")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if _SUSPECT.search("\n" + text):
            return None
        codes = text.split("\n")
    if max(map(len, codes)) > CODE_MAX_LENGTH:
        return None
    return codes


def parse_txt(stream: BinaryIO, whitespace: Whitespace = Whitespace.REJECT) -> Iterator[Block]:
    """One code per line, UTF-8 (BOM ignored), LF or CRLF; yields blocks of lines.

    A block whose lines are all plainly valid is taken in a few whole-block
    operations; only a block with something suspect is checked line by line.
    """
    for first, data in _line_runs(stream):
        yield _txt_block(data, first, whitespace)


def _txt_block(data: bytes | None, first: int, whitespace: Whitespace) -> Block:
    if data is None:
        return Block(lines=1, problems=[_txt_problem(first, None, whitespace)[1]])  # type: ignore[list-item]
    if whitespace is Whitespace.REJECT:
        codes = _fast_block(data, first)
        if codes is not None:
            return Block(lines=len(codes), codes=codes)
    lines = data.split(b"\n")
    block = Block(lines=len(lines))
    for number, raw in enumerate(lines, start=first):
        code, problem = _txt_problem(number, raw, whitespace)
        if problem is not None:
            block.problems.append(problem)
        else:
            block.codes.append(code)  # type: ignore[arg-type]
    return block


CODE_COLUMN_NAMES = ("code", "coupon", "coupon_code", "promo_code", "promocode")
DATE_COLUMNS = ("issue_start", "issue_end", "available_from", "available_till")
# Window ends given as a bare date include that whole day.
_END_COLUMNS = frozenset({"issue_end", "available_till"})


def _column_key(header: str) -> str:
    return re.sub(r"[\s-]+", "_", header.strip().lower())


def parse_moment(value: str, column: str) -> datetime:
    """ISO 8601 date or datetime; aware values go to UTC, naive ones are UTC."""
    text = value.strip()
    try:
        # Any ISO date form (2030-06-30, 20300630), not only the 10-character one.
        day = date.fromisoformat(text)
    except ValueError:
        return to_utc_naive(datetime.fromisoformat(text))
    start = datetime(day.year, day.month, day.day)
    return start + timedelta(days=1) if column in _END_COLUMNS else start


def parse_csv(stream: BinaryIO, whitespace: Whitespace = Whitespace.REJECT) -> Iterator[Block]:
    """A header row with a code column and optional window columns."""
    head = stream.read(_BINARY_SAMPLE)
    if not head:
        raise UnreadableFile("the file is empty: no header and no codes")
    if _looks_binary(head):
        raise UnreadableFile("this looks like a binary file, not a CSV of codes")
    whole = io.BufferedReader(_Prefixed(head, stream), BLOCK_SIZE)
    # The decoder reads ahead of the CSV reader: strict decoding would blame an
    # invalid byte on the wrong line (or on the header). Undecodable bytes are
    # kept as surrogates instead and reported on the row that holds them.
    text = io.TextIOWrapper(whole, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(bounded_lines(text, MAX_CSV_LINE_CHARS), strict=True)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError, LineTooLong) as exc:
        raise UnreadableFile(f"line 1: the header cannot be read ({exc})") from exc
    if header is None:
        raise UnreadableFile("the file is empty: no header and no codes")
    if any(_UNDECODABLE.search(h) for h in header):
        raise UnreadableFile("line 1: the header is not valid UTF-8")
    keys = [_column_key(h) for h in header]
    code_index = next((keys.index(k) for k in CODE_COLUMN_NAMES if k in keys), None)
    if code_index is None:
        raise UnreadableFile(
            f"line 1: no code column in the header {header!r} "
            "(expected 'code', 'Code', 'Coupon' or 'Coupon Code')"
        )
    date_indexes = {name: keys.index(name) for name in DATE_COLUMNS if name in keys}
    block = Block()
    for item in _csv_rows(reader, code_index, date_indexes, len(header), whitespace):
        block.lines += 1
        if isinstance(item, LineProblem):
            block.problems.append(item)
        else:
            block.rows.append(item)
        if block.lines >= BLOCK_LINES:
            yield block
            block = Block()
    if block.lines:
        yield block


def _csv_rows(
    reader: Iterator[list[str]],
    code_index: int,
    date_indexes: dict[str, int],
    width: int,
    whitespace: Whitespace,
) -> Iterator[CodeRow | LineProblem]:
    """Each data row as the store takes it, or the problem with it.

    This runs once per line, so it does the least it can per line: one test
    for undecodable bytes over the whole row, and each distinct date text
    parsed once (the rows of a file mostly share a few).
    """
    line = 1
    moment = _moment_reader()
    dated = [(DATE_COLUMNS.index(name), name, i) for name, i in date_indexes.items()]
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            yield LineProblem(line + 1, "invalid UTF-8; the rest of the file was not read")
            return
        except csv.Error as exc:
            yield LineProblem(line + 1, f"malformed CSV ({exc}); the rest of the file was not read")
            return
        except LineTooLong as exc:
            yield LineProblem(
                exc.line,
                f"longer than {exc.max_chars} characters; the rest of the file was not read",
            )
            return
        line = reader.line_num  # type: ignore[attr-defined]
        if not row:
            yield LineProblem(line, "empty line")
            continue
        joined = "".join(row)
        if not joined.isascii() and _UNDECODABLE.search(joined):
            yield LineProblem(line, "invalid UTF-8")
            continue
        if len(row) != width:
            yield LineProblem(line, f"{counted(len(row), 'field')} where the header has {width}")
            continue
        code, reason = check_code(row[code_index], whitespace)
        if code is None:
            yield LineProblem(line, reason or "invalid")
            continue
        if not dated:
            yield (code, None, None, None, None, NO_END)
            continue
        window: list[datetime | None] = [None, None, None, None]
        try:
            for position, name, i in dated:
                window[position] = moment(row[i], name)
        except ValueError as exc:
            yield LineProblem(line, f"bad date ({exc})")
            continue
        problem = _window_problem(window)
        if problem:
            yield LineProblem(line, problem)
            continue
        issue_start, issue_end, available_from, available_till = window
        ends = (end for end in (issue_end, available_till) if end is not None)
        yield (
            code,
            issue_start,
            issue_end,
            available_from,
            available_till,
            min(ends, default=NO_END),
        )


def _moment_reader() -> Callable[[str, str], datetime | None]:
    """``parse_moment`` for a field (None when blank), each distinct text parsed once."""
    known: dict[tuple[str, str], datetime | None] = {}

    def moment(value: str, column: str) -> datetime | None:
        key = (value, column)
        try:
            return known[key]
        except KeyError:
            parsed = parse_moment(value, column) if value.strip() else None
            if len(known) < _MOMENTS_KEPT:
                known[key] = parsed
            return parsed

    return moment


#: Distinct date texts remembered per file: enough for real files, bounded for any file.
_MOMENTS_KEPT = 10_000


def _window_problem(window: list[datetime | None]) -> str | None:
    """Why a window (issue_start, issue_end, available_from, available_till) is empty."""
    for start in (0, 2):
        first, last = window[start], window[start + 1]
        if first is not None and last is not None and first >= last:
            return (
                f"{DATE_COLUMNS[start]} {first.isoformat()} is not before "
                f"{DATE_COLUMNS[start + 1]} {last.isoformat()}"
            )
    return None


class _Prefixed(io.RawIOBase):
    """A stream with bytes already read put back in front of it."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def parse(stream: BinaryIO, fmt: FileFormat, whitespace: Whitespace) -> Iterator[Block]:
    return parse_csv(stream, whitespace) if fmt is FileFormat.CSV else parse_txt(stream, whitespace)
