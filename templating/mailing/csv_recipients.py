"""Reading a CSV recipients file: its header understood, every row checked."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

from promomail.pools import (
    MAX_ID_LENGTH,
    UNSAFE_ID,
    UNSAFE_VALUE,
    LineTooLong,
    TableError,
    counted,
    delimiter_name,
    describe_columns,
    describe_unsafe,
    find_columns,
    has_column,
    sniff_delimiter,
    take_sample,
    utf16_problem,
)
from promomail.templating.errors import RecipientError
from promomail.templating.mailing.recipient_rows import (
    EMAIL_COLUMN,
    ID_COLUMN,
    OnRepeat,
    Recipient,
    _csv_column,
    _lines,
    _open,
    _refuse_id,
    _Tape,
    _too_long,
    _where,
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


#: Builds a named tuple without its class's Python-level ``__new__``: one per line.
_new_tuple = tuple.__new__

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
                    yield _new_tuple(Recipient, (recipient_id, _NO_FIELDS, line))
                    continue
                # The width was checked above; strict zip would check it again.
                fields = dict(zip(names, row, strict=False))
                if email_alias is not None:
                    fields[EMAIL_COLUMN] = row[email_alias]
                yield _new_tuple(Recipient, (recipient_id, fields, line))
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
