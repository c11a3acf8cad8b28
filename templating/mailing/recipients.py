"""Reading recipients (CSV with an ``id`` column, or JSON Lines), streaming.

Shards and worker slices are decided by a stable hash of the recipient id,
so a recipient always lands in the same shard whichever machine reads the
file, and a re-run assigns the same recipients again.

A recipients file is a table of text: every recipient is a flat record whose
values are text (CSV) or JSON scalars (strings, numbers, true/false, null).
What would make a file ambiguous is refused while reading, naming file, line
and column, before any code moves: duplicate or empty column names, nested
JSON values, duplicate JSON keys, NUL characters (PostgreSQL cannot store
them, SQLite would), bytes that are not UTF-8, and ids that are empty, too
long for the store or hold control characters (ids end up in mail headers
and file names). An id is text: a JSON integer id is its decimal digits, so
``1`` and ``"1"`` are the same recipient; other JSON types are refused.
Whitespace around an id is not part of it, in both formats.

Problems of one recipient's values that only matter for its message (an
e-mail column that is not exactly one address, say) fail that recipient at
render time instead; :func:`one_address` decides the address.
"""

from __future__ import annotations

import codecs
import csv
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, NamedTuple

from pools import (
    MAX_ID_LENGTH,
    UNSAFE_ID,
    UNSAFE_VALUE,
    LineTooLong,
    TableError,
    bounded_lines,
    counted,
    delimiter_name,
    describe_columns,
    describe_unsafe,
    find_columns,
    has_column,
    id_problem,
    open_binary,
    open_text,
    sniff_delimiter,
    take_sample,
    utf16_problem,
)

# The address rules and the shard hash live in pools, which the sender shares;
# templating and its tests keep importing them from here.
from pools import PLAIN_ADDRESS as PLAIN_ADDRESS
from pools import ParsedAddresses as ParsedAddresses
from pools import address_header as address_header
from pools import one_address as one_address
from pools import stable_hash as stable_hash
from templating.errors import RecipientError

#: The columns of the recipient's id and address, found whatever their case.
ID_COLUMN = "id"
EMAIL_COLUMN = "email"

#: Characters one line of a recipients file may hold: a file with no line end
#: (or ``/dev/zero``) must not be read into memory whole.
MAX_LINE_CHARS = 1 << 20


class Recipient(NamedTuple):
    """One recipient as read: a tuple, the cheapest record to build per line."""

    id: str
    fields: dict[str, Any]
    line: int


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise RecipientError(
                f"shard {self.index}/{self.count} is not valid: use K/N, 1 ≤ K ≤ N"
            )

    @property
    def label(self) -> str:
        return "all" if self.count == 1 else f"{self.index}/{self.count}"


def worker_hash(recipient_id: str) -> int:
    """Which worker of a run renders a recipient: only the run's own workers
    must agree on it, so a cheaper hash than the shard's (every worker
    hashes every line of the file)."""
    return zlib.crc32(recipient_id.encode())


def in_slice(recipient_id: str, shard: Shard, worker: int = 0, workers: int = 1) -> bool:
    """Whether this recipient belongs to the shard and, within it, to the worker."""
    if shard.count > 1 and stable_hash(recipient_id) % shard.count != shard.index - 1:
        return False
    return workers == 1 or worker_hash(recipient_id) % workers == worker


def slice_filter(shard: Shard, worker: int = 0, workers: int = 1) -> Callable[[str], bool] | None:
    """:func:`in_slice` for one worker as a filter of ids; None when it keeps every id."""
    if shard.count == 1 and workers == 1:
        return None
    if shard.count == 1:
        # worker_hash written out: this runs for every line of the file.
        return lambda recipient_id: zlib.crc32(recipient_id.encode()) % workers == worker
    return lambda recipient_id: in_slice(recipient_id, shard, worker, workers)


@dataclass(frozen=True)
class RecipientSlice:
    """The recipients one worker renders, read ``chunk_size`` at a time.

    For a render whose preflight has read and checked the whole file: lines
    of other slices are dropped as soon as their id is known.
    """

    path: str
    shard: Shard
    worker: int
    workers: int
    chunk_size: int

    def chunks(self) -> Iterator[list[Recipient]]:
        keep = slice_filter(self.shard, self.worker, self.workers)
        recipients = read_recipients(self.path, keep, others_checked=True)
        while chunk := list(islice(recipients, self.chunk_size)):
            yield chunk


def _where(path: Path, line: int, column: str) -> str:
    return f"{path}, line {line}, {column}"


def _csv_column(index: int, names: Sequence[str]) -> str:
    name = names[index] if index < len(names) else ""
    return f"column {index + 1} ({name!r})" if name else f"column {index + 1}"


def columns_of(path: str | Path) -> list[str]:
    """The recipients file's columns as templates see them (CSV header, first object's keys).

    The address column is also ``email`` when the file spells it otherwise
    (``Email``, ``EMAIL``): every template reads it as ``client.email``.
    """
    path = Path(path)
    if _is_jsonl(path):
        for recipient in read_recipients(path):
            return list(recipient.fields)
        return []
    with _open(path) as handle:
        return _csv_table(path, handle).columns


class FileColumns(NamedTuple):
    """Which of some wanted columns a recipients file has, and how to name what it has."""

    present: frozenset[str]
    #: Every column name the file has (CSV: its header; JSON Lines: the keys seen).
    names: list[str]
    #: Where those names come from, for a message: the header line as written,
    #: or the keys of a JSON Lines file's first record.
    where: str


def file_columns(path: str | Path, wanted: Iterable[str]) -> FileColumns:
    """Which of ``wanted`` the recipients file has, reading no more than needed.

    CSV: its header. JSON Lines records may differ in their keys: a column
    is there when some record has it, so the file is read until every
    wanted column was seen (to its end when one never is).
    """
    path = Path(path)
    wanted = set(wanted)
    if not _is_jsonl(path):
        with _open(path) as handle:
            table = _csv_table(path, handle)
        return FileColumns(
            frozenset(wanted.intersection(table.columns)),
            table.columns,
            f"its header, line 1: {_shown(table.header_text)}",
        )
    present: set[str] = set()
    first: list[str] | None = None
    for recipient in read_recipients(path):
        if first is None:
            first = list(recipient.fields)
        present.update(wanted.intersection(recipient.fields))
        if present == wanted:
            break
    keys = first or []
    return FileColumns(
        frozenset(present), keys, f"the keys of its first record: {describe_columns(keys)}"
    )


#: Characters of a header line shown in a message.
_SHOWN_CHARS = 300


def _shown(text: str) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


#: Told of each id that appears again: (id, line of the repeat).
OnRepeat = Callable[[str, int], None]


def read_recipients(
    path: str | Path,
    keep: Callable[[str], bool] | None = None,
    *,
    others_checked: bool = False,
    with_fields: bool = True,
    repeated: OnRepeat | None = None,
) -> Iterator[Recipient]:
    """Every recipient once (a repeated id is skipped), or RecipientError naming file and line.

    ``keep`` selects a slice (shard, worker) before duplicates are tracked,
    so each process remembers only the ids of its own slice. Every line is
    checked unless ``others_checked`` says the whole file was read before
    (a render's preflight): then a CSV line outside the slice is dropped as
    soon as its id is known, and a worker pays only for its own recipients.
    Without ``with_fields`` every line is still checked, but the recipients
    come with no fields (for a reader of ids, which need not build them).
    ``repeated`` hears of every id of the slice met again, with its line.
    """
    path = Path(path)
    if not _is_jsonl(path):
        return _read_csv(
            path, keep, others_checked=others_checked, with_fields=with_fields, repeated=repeated
        )
    return _unique(_read_jsonl(path), keep, repeated)


def _unique(
    rows: Iterator[Recipient], keep: Callable[[str], bool] | None, repeated: OnRepeat | None
) -> Iterator[Recipient]:
    seen: set[str] = set()
    for recipient in rows:
        if keep is not None and not keep(recipient.id):
            continue
        if recipient.id in seen:
            if repeated is not None:
                repeated(recipient.id, recipient.line)
            continue
        seen.add(recipient.id)
        yield recipient


class Duplicate(NamedTuple):
    """A recipient id the file holds more than once: rendered once, from ``first_line``."""

    recipient: str
    line: int
    first_line: int

    def as_dict(self) -> dict[str, Any]:
        return {"recipient": self.recipient, "line": self.line, "first_line": self.first_line}


def duplicates_in(
    path: str | Path, repeats: Sequence[tuple[str, int]], keep: Callable[[str], bool] | None
) -> list[Duplicate]:
    """Each repeat (id, line) that :func:`read_recipients` reported, with the line
    the id first appeared on: one more read of the file, only when it has repeats,
    ending at the last first appearance."""
    if not repeats:
        return []
    wanted = {recipient_id for recipient_id, _ in repeats}
    first: dict[str, int] = {}
    for recipient in read_recipients(path, keep, with_fields=False):
        if recipient.id in wanted:
            first[recipient.id] = recipient.line
            if len(first) == len(wanted):
                break
    return [Duplicate(rid, line, first[rid]) for rid, line in repeats]


class RecipientRecords:
    """A recipients file read as a render reads it, each recipient with its record as written.

    The same checks, the same ids, the same first-of-duplicates as
    :func:`read_recipients`; beside each recipient, the text of its record
    exactly as the file holds it (quoting, a line break inside a value, the
    line end, CR LF or LF), so a file made of some of these records and the
    :attr:`preamble` says of every one of them what the original said. Only
    one record is held at a time.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.jsonl = _is_jsonl(self.path)
        self._tape: _Tape | None = None

    def __iter__(self) -> Iterator[tuple[Recipient, str]]:
        tape = self._tape = _Tape()
        if self.jsonl:
            rows = _unique(_read_jsonl(self.path, tape), None, None)
        else:
            rows = _read_csv(self.path, None, others_checked=False, with_fields=False, tape=tape)
        for recipient in rows:
            yield recipient, tape.take()

    @property
    def preamble(self) -> str:
        """What comes before the first record: a byte order mark if the file has one, and the
        CSV header line as written. Known once iterating has begun."""
        if self._tape is None:
            raise AssertionError("iterate over the records first")
        with _open_bytes(self.path) as handle:
            mark = "\ufeff" if handle.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 else ""
        return mark + self._tape.header


class _Tape:
    """The lines a reader consumed for the record it is reading, as the file has them.

    The reader marks where each record starts (:meth:`keep_last`), so the tape
    holds one record at a time, never a run of skipped ones.
    """

    __slots__ = ("_lines", "header")

    def __init__(self) -> None:
        self._lines: list[str] = []
        #: The CSV header's lines, once read.
        self.header = ""

    def wrap(self, lines: Iterator[str], *, one_per_record: bool = False) -> Iterator[str]:
        held = self._lines
        for line in lines:
            if one_per_record:
                held.clear()
            held.append(line)
            yield line

    def keep_last(self, count: int) -> None:
        """Forget every line but the last ``count`` (those of the record being read)."""
        if len(self._lines) > count:
            del self._lines[:-count]

    def take(self) -> str:
        text = "".join(self._lines)
        self._lines.clear()
        return text


def _open_bytes(path: Path) -> Any:
    try:
        return open_binary(path)
    except OSError as exc:
        raise RecipientError(f"{path}: cannot read recipients ({exc.strerror})") from exc


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson", ".json")


def _open(path: Path) -> Any:
    # Undecodable bytes become lone surrogates, found per field so the error
    # can name line and column instead of a position in a decoder buffer.
    # A regular file only: a device or FIFO never ends, or is gone once read
    # (the preflight and every worker read the file).
    try:
        return open_text(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise RecipientError(f"{path}: cannot read recipients ({exc.strerror})") from exc


def _lines(handle: Any) -> Any:
    return bounded_lines(handle, MAX_LINE_CHARS)


def _too_long(path: Path, exc: LineTooLong) -> RecipientError:
    return RecipientError(
        f"{path}, line {exc.line}: longer than {exc.max_chars} characters; not a line of recipients"
    )


class _CsvTable(NamedTuple):
    """A CSV recipients file opened: its header understood, its records to come."""

    #: The header's names, stripped: the fields' keys.
    names: list[str]
    id_index: int
    #: The address column when its name is not ``email`` (``Email``, ``EMAIL``):
    #: its value is the field ``email`` too.
    email_alias: int | None
    #: The records after the header.
    reader: Any
    #: The header line as written.
    header_text: str

    @property
    def columns(self) -> list[str]:
        """The names templates see: the header's, and ``email`` for the address column."""
        return self.names if self.email_alias is None else [*self.names, EMAIL_COLUMN]


def _csv_table(path: Path, handle: Any, tape: _Tape | None = None) -> _CsvTable:
    """Read the header: its separator sniffed, its ``id`` and ``email`` columns found
    whatever their case; anything ambiguous refused naming line 1. A ``tape``
    records the lines as the reader takes them (the sample is read ahead, so
    it is wrapped around what the reader reads, not around the file)."""
    lines = _lines(handle)
    try:
        sample, complete = take_sample(lines)
        if sample:
            utf16 = utf16_problem(sample[0])
            if utf16 is not None:
                raise RecipientError(f"{path}: {utf16}")
        delimiter = sniff_delimiter(
            sample, complete, lambda names: has_column(names, (ID_COLUMN,)), source=str(path)
        )
    except LineTooLong as exc:
        raise _too_long(path, exc) from exc
    except TableError as exc:
        raise RecipientError(str(exc)) from exc
    records = chain(sample, lines) if tape is None else tape.wrap(chain(sample, lines))
    reader = csv.reader(records, delimiter=delimiter, strict=True)
    names = _csv_header(path, reader, delimiter)
    try:
        [id_index] = find_columns(names, (ID_COLUMN,), source=str(path))
        found_email = find_columns(names, (EMAIL_COLUMN,), source=str(path))
    except TableError as exc:
        raise RecipientError(str(exc)) from exc
    email_alias = found_email[0] if found_email and names[found_email[0]] != EMAIL_COLUMN else None
    return _CsvTable(names, id_index, email_alias, reader, sample[0] if sample else "")


def _csv_header(path: Path, reader: Any, delimiter: str) -> list[str]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise RecipientError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from exc
    except LineTooLong as exc:
        raise _too_long(path, exc) from exc
    if not header:
        raise RecipientError(f"{path}: empty recipients file, no header")
    names = [h.strip() for h in header]
    first: dict[str, int] = {}
    for index, name in enumerate(names):
        bad = UNSAFE_VALUE.search(header[index])
        if bad is not None:
            raise RecipientError(
                f"{path}, line 1, column {index + 1}: the column name holds "
                f"{describe_unsafe(bad.group())}"
            )
        if not name:
            raise RecipientError(f"{path}, line 1, column {index + 1}: empty column name")
        if name in first:
            raise RecipientError(
                f"{path}, line 1, column {index + 1}: column {name!r} appears twice "
                f"(also column {first[name] + 1}); which value counts would be a guess"
            )
        first[name] = index
    if not has_column(names, (ID_COLUMN,)):
        separated = "" if delimiter == "," else f", separated by {delimiter_name(delimiter)}"
        raise RecipientError(
            f"{path}, line 1: the header has no 'id' column (any case); the columns found"
            f"{separated}: {describe_columns(names)}"
        )
    return names


#: The fields of a recipient read for its id alone (never changed).
_NO_FIELDS: dict[str, Any] = {}


def _read_csv(
    path: Path,
    keep: Callable[[str], bool] | None,
    *,
    others_checked: bool,
    with_fields: bool,
    repeated: OnRepeat | None = None,
    tape: _Tape | None = None,
) -> Iterator[Recipient]:
    # One loop for parsing, checking, slicing and duplicates: this runs for
    # every line of every mailing, where a generator layer per step shows.
    with _open(path) as handle:
        table = _csv_table(path, handle, tape)
        reader, names, id_index = table.reader, table.names, table.id_index
        email_alias = table.email_alias
        if tape is not None:
            tape.header = tape.take()
        width = len(names)
        search = UNSAFE_VALUE.search
        seen: set[str] = set()
        remember = seen.add
        skip_unchecked, keep_checked = (keep, None) if others_checked else (None, keep)
        try:
            previous = reader.line_num
            for row in reader:
                # Where the record starts: a quoted value may span lines.
                line, previous = previous + 1, reader.line_num
                if tape is not None:
                    tape.keep_last(previous - line + 1)
                if not row:
                    continue
                if len(row) != width:
                    raise RecipientError(
                        f"{path}, line {line}: {counted(len(row), 'field')} where the header has "
                        f"{width}"
                    )
                recipient_id = row[id_index].strip()
                if skip_unchecked is not None and not skip_unchecked(recipient_id):
                    continue
                # The common row is printable text, which holds nothing refused:
                # one C call for the whole row; the searches run only otherwise.
                if not "".join(row).isprintable():
                    if search("".join(row)) is not None:
                        _refuse_csv_row(path, line, row, names)
                    if UNSAFE_ID.search(recipient_id) is not None:
                        _refuse_id(path, line, _csv_column(id_index, names), recipient_id)
                if not recipient_id or len(recipient_id) > MAX_ID_LENGTH:
                    _refuse_id(path, line, _csv_column(id_index, names), recipient_id)
                # Only a checked id is handed to ``keep``, which may hash it.
                if keep_checked is not None and not keep_checked(recipient_id):
                    continue
                if recipient_id in seen:
                    if repeated is not None:
                        repeated(recipient_id, line)
                    continue
                remember(recipient_id)
                if not with_fields:
                    yield Recipient(recipient_id, _NO_FIELDS, line)
                    continue
                # The width was checked above; strict zip would check it again.
                fields = dict(zip(names, row, strict=False))
                if email_alias is not None:
                    fields[EMAIL_COLUMN] = row[email_alias]
                yield Recipient(recipient_id, fields, line)
        except csv.Error as exc:
            raise RecipientError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from exc
        except LineTooLong as exc:
            raise _too_long(path, exc) from exc


def _refuse_csv_row(path: Path, line: int, row: Sequence[str], names: Sequence[str]) -> None:
    for index, value in enumerate(row):
        bad = UNSAFE_VALUE.search(value)
        if bad is not None:
            raise RecipientError(
                f"{_where(path, line, _csv_column(index, names))}: "
                f"holds {describe_unsafe(bad.group())}"
            )


def _refuse_id(path: Path, line: int, column: str, recipient_id: str) -> None:
    problem = id_problem(recipient_id) or "not a usable id"
    raise RecipientError(f"{_where(path, line, column)}: {problem}")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return record


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_decoder = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)
_SCALARS = (str, int, float, bool, type(None))


def _read_jsonl(path: Path, tape: _Tape | None = None) -> Iterator[Recipient]:
    with _open(path) as handle:
        lines = _lines(handle) if tape is None else tape.wrap(_lines(handle), one_per_record=True)
        try:
            yield from _jsonl_records(path, lines)
        except LineTooLong as exc:
            raise _too_long(path, exc) from exc


def _jsonl_records(path: Path, lines: Iterator[str]) -> Iterator[Recipient]:
    decode = _decoder.decode
    # Records of one file mostly have the same keys: where the id and the
    # address are is worked out once for each set of keys (a few at most).
    shapes: dict[tuple[str, ...], tuple[str | None, str | None]] = {}
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = decode(text)
        except json.JSONDecodeError as exc:
            raise RecipientError(f"{path}, line {line}: invalid JSON ({exc.msg})") from exc
        except _DuplicateKey as exc:
            raise RecipientError(
                f"{_where(path, line, f'column {exc.key!r}')}: the key appears twice in "
                "one object; which value counts would be a guess"
            ) from exc
        except ValueError as exc:
            raise RecipientError(f"{path}, line {line}: invalid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise RecipientError(f"{path}, line {line}: not a JSON object")
        for key, value in record.items():
            if type(value) is str:
                if UNSAFE_VALUE.search(value) is not None:
                    _refuse_json_value(path, line, key, value, text)
            elif not isinstance(value, _SCALARS):
                kind = "an object" if isinstance(value, dict) else "a list"
                raise RecipientError(
                    f"{_where(path, line, f'column {key!r}')}: holds {kind}; a recipient's "
                    "values are text, numbers, true/false or null"
                )
            if not key or UNSAFE_VALUE.search(key) is not None:
                raise RecipientError(
                    f"{path}, line {line}: column name {key!r} is empty or not text"
                )
        shape = tuple(record)
        keys = shapes.get(shape)
        if keys is None:
            keys = _jsonl_keys(path, line, shape)
            if len(shapes) < _SHAPES:
                shapes[shape] = keys
        id_key, email_key = keys
        if email_key is not None and email_key != EMAIL_COLUMN:
            record[EMAIL_COLUMN] = record[email_key]
        found_id = record[id_key] if id_key is not None else None
        yield Recipient(_json_id(path, line, found_id), record, line)


#: Sets of keys whose id and address keys a JSON Lines reader remembers.
_SHAPES = 64


def _jsonl_keys(path: Path, line: int, keys: Sequence[str]) -> tuple[str | None, str | None]:
    """The record's id key and address key, found as a CSV header's columns are."""
    try:
        ids = find_columns(keys, (ID_COLUMN,), source=str(path), line=line, noun="key")
        emails = find_columns(keys, (EMAIL_COLUMN,), source=str(path), line=line, noun="key")
    except TableError as exc:
        raise RecipientError(str(exc)) from exc
    return (keys[ids[0]] if ids else None, keys[emails[0]] if emails else None)


def _refuse_json_value(path: Path, line: int, key: str, value: str, text: str) -> None:
    bad = UNSAFE_VALUE.search(value)
    assert bad is not None
    char = bad.group()
    # The same lone surrogate comes from a byte that is not UTF-8 (then it is
    # in the raw line) or from a \uXXXX escape in a JSON string.
    escaped = "\ud800" <= char <= "\udfff" and char not in text
    what = (
        f"a lone surrogate (\\u{ord(char):04x}), which is not Unicode text"
        if escaped
        else describe_unsafe(char)
    )
    raise RecipientError(f"{_where(path, line, f'column {key!r}')}: holds {what}")


def _json_id(path: Path, line: int, value: Any) -> str:
    if value is None:
        raise RecipientError(f"{path}, line {line}: no 'id'")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RecipientError(
            f"{path}, line {line}, column 'id': the id is {json.dumps(value)}; "
            "an id is a string or a whole number"
        )
    recipient_id = value.strip() if isinstance(value, str) else str(value)
    if not recipient_id:
        raise RecipientError(f"{path}, line {line}: no 'id'")
    if UNSAFE_ID.search(recipient_id) is not None or len(recipient_id) > MAX_ID_LENGTH:
        _refuse_id(path, line, "column 'id'", recipient_id)
    return recipient_id
