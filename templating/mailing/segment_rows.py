"""A segment as a recipients file: the rows of a mailing's file whose customer is in it.

A follow-up mailing (a reminder) needs more than ids: the columns its
template reads (``client.first_name``, ``client.email``). So the follow-up's
recipients file is the original one, kept to the customers in the segment,
each row exactly as written there (every column, its quoting, a line break
inside a value, a byte order mark, CR LF or LF), in the file's own format.
A repeated id keeps its first row, the one a render of the original renders.

How the rows are matched: the file is read in slices of a few hundred
records, in its own order, and each slice's ids are looked up in the
store with the segment's query narrowed to them. Memory holds one slice,
whatever the sizes of the file and the segment (a segment of millions of
customers is never loaded), the rows come out in the file's order without
sorting anything, every look-up is served by the index on
``issuances.customer_id``, and nothing is written to the store. All slices
are looked up in one snapshot of the store, so the file reflects one moment.

Nothing half-written: the whole file is read and checked first (as a render's
preflight does), so a file the render would refuse fails before the first
row is written; a named output file takes its name only once complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import chain, islice
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine

from promomail.pools import (
    ExportError,
    PreparedSegment,
    SegmentFilters,
    prepare_segment,
    read_transaction,
    replaced_whole,
    snapshot_transaction,
)
from promomail.templating.mailing.recipients import Recipient, RecipientRecords, read_recipients

#: Records looked up per query: far below every database's bound-parameter limit.
SLICE = 500


@dataclass(frozen=True)
class SegmentRows:
    """What was written: how many recipients the file has, how many rows were kept."""

    recipients_file: str
    recipients: int
    rows: int
    out: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "recipients_file": self.recipients_file,
            "recipients": self.recipients,
            "rows": self.rows,
            "out": self.out,
        }


def write_segment_rows(
    engine: Engine,
    recipients_file: str | os.PathLike[str],
    filters: SegmentFilters,
    out: IO[bytes],
    *,
    now: datetime | None = None,
) -> SegmentRows:
    """Write to ``out`` the rows of ``recipients_file`` whose id is in the segment, as written.

    The filters and the whole file are checked before the first byte is written.
    """
    path = Path(recipients_file)
    with read_transaction(engine) as conn:
        prepare_segment(conn, filters, now=now)  # an unknown pool, before reading a big file
    total = sum(1 for _ in read_recipients(path, with_fields=False))
    records = RecipientRecords(path)
    written = 0
    with snapshot_transaction(engine) as conn:
        segment = prepare_segment(conn, filters, now=now)
        slices = _slices(iter(records))
        first = next(slices, [])  # reads the header: the preamble is known from here
        out.write(records.preamble.encode("utf-8"))
        for chunk in chain([first], slices):
            members = _members(segment, conn, chunk)
            for recipient, text in chunk:
                if recipient.id in members:
                    out.write(text.encode("utf-8"))
                    written += 1
    out.flush()
    return SegmentRows(str(path), total, written)


def segment_rows_file(
    engine: Engine,
    recipients_file: str | os.PathLike[str],
    filters: SegmentFilters,
    target: str | os.PathLike[str],
    *,
    now: datetime | None = None,
) -> SegmentRows:
    """:func:`write_segment_rows` into the file ``target``, which appears only once complete.

    A render reads ``target`` in the format its extension names, so it must
    name the recipients file's format: CSV rows are not given a ``.jsonl``
    name, nor JSON Lines a ``.csv`` one.
    """
    source, out = Path(recipients_file), Path(target)
    source_jsonl = RecipientRecords(source).jsonl
    if RecipientRecords(out).jsonl != source_jsonl:
        have, read_as = ("JSON Lines", "CSV") if source_jsonl else ("CSV", "JSON Lines")
        raise ExportError(
            f"cannot write {out}: the rows of {source} are {have}, but a render would read "
            f"this file as {read_as}; give it the extension of {source.name}"
        )
    if not out.parent.is_dir():
        raise ExportError(f"cannot write {out}: folder {out.parent} does not exist")
    try:
        with replaced_whole(out) as handle:
            report = write_segment_rows(engine, source, filters, handle, now=now)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return replace(report, out=str(out))


def _slices(records: Iterator[tuple[Recipient, str]]) -> Iterator[list[tuple[Recipient, str]]]:
    while chunk := list(islice(records, SLICE)):
        yield chunk


def _members(
    segment: PreparedSegment, conn: Connection, chunk: list[tuple[Recipient, str]]
) -> set[str]:
    """The ids of the slice that are in the segment."""
    return set(segment.ids(conn, customers=[recipient.id for recipient, _ in chunk]))
