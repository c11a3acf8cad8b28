"""Tables users hand over as text: a header row naming the columns, then records.

Recipients files and bounce lists come out of CRMs, spreadsheets and mail
services, which agree on little: Excel in many locales separates columns
with ``;``, other exports use a tab or ``|``; headers say ``ID`` or
``Email`` where the documentation says ``id`` and ``email``; a byte order
mark may lead the file (the readers open it as ``utf-8-sig``, which drops a
UTF-8 one). Every such file is taken apart here, the same way for every
reader:

* :func:`sniff_delimiter` picks the separator from a bounded sample of the
  file's first lines: the one of ``,`` ``;`` tab ``|`` that reads the
  sample as a table whose header has the columns the reader needs and
  whose every record is as wide as the header. Two separators that read
  the sample as different tables are refused rather than guessed between.
* :func:`find_columns` finds a column by its names whatever their case (and
  spaces around them); two columns answering to the same name are refused,
  since which one counts would be a guess.
* :func:`describe_columns` lists what a header holds, for the error that
  says a needed column is not there.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence

from promomail.pools.errors import PromomailError

#: The separators tried, in the order a tie between equal readings is settled.
DELIMITERS = (",", ";", "\t", "|")
#: What the sniffer reads at most: lines, and characters in all.
SAMPLE_LINES = 64
SAMPLE_CHARS = 1 << 16
#: Column names listed at most in a message, and characters of each shown.
LISTED_COLUMNS = 20
LISTED_CHARS = 40

_NAMES = {",": "','", ";": "';'", "\t": "a tab", "|": "'|'"}


class TableError(PromomailError):
    """A table's header cannot be read as one table; names the file and line."""


def delimiter_name(delimiter: str) -> str:
    return _NAMES.get(delimiter, repr(delimiter))


def take_sample(lines: Iterator[str]) -> tuple[list[str], bool]:
    """The file's first lines (at most :data:`SAMPLE_LINES`, about :data:`SAMPLE_CHARS`
    characters, and always the first line whole), and whether they are the whole file."""
    sample: list[str] = []
    size = 0
    for line in lines:
        sample.append(line)
        size += len(line)
        if len(sample) >= SAMPLE_LINES or size >= SAMPLE_CHARS:
            return sample, False
    return sample, True


def sniff_delimiter(
    sample: Sequence[str],
    complete: bool,
    usable: Callable[[list[str]], bool],
    *,
    source: str,
) -> str:
    """The separator of the table whose first lines are ``sample``.

    ``usable`` says whether a header (its names stripped) has what the
    reader needs (an ``id`` column, say). A separator is a candidate when
    it reads the sample without a CSV error, splits the header into a
    usable one of two columns or more, and makes every record as wide as
    the header. One reading: its separator. Several readings of the sample
    that differ: :class:`TableError`, naming the separators. None (a header
    of one column too): the separator that splits the header into most
    columns, ``,`` on a tie, so that the reader's own error (no ``id``
    column, a record of the wrong width) names the columns the file seems
    to have.
    """
    readings: dict[str, list[list[str]]] = {}
    for delimiter in DELIMITERS:
        rows = _read_sample(sample, delimiter, complete)
        # A header it does not split says nothing for a separator.
        if not rows or len(rows[0]) < 2 or not usable([name.strip() for name in rows[0]]):
            continue
        width = len(rows[0])
        if all(len(row) == width for row in rows[1:] if row):
            readings[delimiter] = rows
    distinct: list[str] = []
    for delimiter, rows in readings.items():
        if all(readings[other] != rows for other in distinct):
            distinct.append(delimiter)
    if len(distinct) == 1:
        return distinct[0]
    if len(distinct) > 1:
        named = " or ".join(
            f"{delimiter_name(d)} ({len(readings[d][0])} columns)" for d in distinct
        )
        raise TableError(
            f"{source}, line 1: the columns could be separated by {named}; quote the "
            "column names that hold the other character"
        )
    return max(DELIMITERS, key=lambda d: _header_width(sample, d))


def _read_sample(sample: Sequence[str], delimiter: str, complete: bool) -> list[list[str]] | None:
    reader = csv.reader(sample, delimiter=delimiter, strict=True)
    rows: list[list[str]] = []
    try:
        rows.extend(reader)
    except csv.Error:
        # A sample cut inside a quoted value ends in a CSV error on its last
        # line; the record is cut, not wrong. Anywhere else the reading is.
        if complete or reader.line_num < len(sample):
            return None
    return rows


def _header_width(sample: Sequence[str], delimiter: str) -> int:
    try:
        header = next(csv.reader(sample[:1], delimiter=delimiter), [])
    except csv.Error:
        return 0
    return len(header)


def find_columns(
    names: Sequence[str],
    aliases: Sequence[str],
    *,
    source: str,
    line: int = 1,
    noun: str = "column",
) -> list[int]:
    """The columns called by one of ``aliases``, whatever the case, in the aliases' order.

    ``names`` are the header's names as written (or a JSON object's keys,
    ``noun`` ``"key"``); ``aliases`` lower case, most wanted first. Two
    columns that answer to the same alias (``id`` and ``ID``) are a
    :class:`TableError` naming both.
    """
    keys = [name.strip().casefold() for name in names]
    found: list[int] = []
    for alias in aliases:
        matches = [index for index, key in enumerate(keys) if key == alias]
        if len(matches) > 1:
            first, second = matches[:2]
            raise TableError(
                f"{source}, line {line}: {noun}s {names[first]!r} and {names[second]!r} "
                f"are both the {alias!r} {noun} (its case does not count); which one is "
                "meant would be a guess"
            )
        found.extend(matches)
    return found


def has_column(names: Sequence[str], aliases: Sequence[str]) -> bool:
    """Whether some column is called by one of ``aliases`` (any case); never refuses."""
    wanted = set(aliases)
    return any(name.strip().casefold() in wanted for name in names)


def describe_columns(names: Sequence[str]) -> str:
    """The header's columns for a message: quoted, the first few, each cut short."""
    if not names:
        return "none"
    shown = [
        repr(name if len(name) <= LISTED_CHARS else name[: LISTED_CHARS - 1] + "…")
        for name in names[:LISTED_COLUMNS]
    ]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more else "")


def utf16_problem(first_line: str) -> str | None:
    """Why a file whose first line (read as UTF-8 with ``surrogateescape``)
    starts like this is no UTF-8 text: a UTF-16 byte order mark (Excel's
    "Unicode text" export), named as such instead of as two bad bytes."""
    if first_line.startswith(("\udcff\udcfe", "\udcfe\udcff")):
        return "the file is UTF-16 text (it starts with a UTF-16 byte order mark): save it as UTF-8"
    return None
