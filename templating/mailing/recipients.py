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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

# The address rules and the shard hash live in pools, which the sender shares;
# templating and its tests keep importing them from here.
from promomail.pools import PLAIN_ADDRESS as PLAIN_ADDRESS
from promomail.pools import ParsedAddresses as ParsedAddresses
from promomail.pools import address_header as address_header
from promomail.pools import describe_columns
from promomail.pools import one_address as one_address
from promomail.pools import stable_hash as stable_hash
from promomail.templating.mailing.csv_recipients import _csv_table, _read_csv
from promomail.templating.mailing.jsonl_recipients import _read_jsonl
from promomail.templating.mailing.recipient_rows import (
    OnRepeat,
    _is_jsonl,
    _open,
    _open_bytes,
    _Tape,
)
from promomail.templating.mailing.recipient_rows import Recipient as Recipient
from promomail.templating.mailing.shards import Shard as Shard
from promomail.templating.mailing.shards import in_slice as in_slice
from promomail.templating.mailing.shards import slice_filter as slice_filter


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
