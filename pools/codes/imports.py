"""Uploading code files into a pool, all or nothing, and the import history.

The whole upload runs in one transaction and streams: codes are inserted in
blocks as they are read (memory stays flat for any file size), duplicates are
skipped by the unique (pool, code) constraint and counted, and when any line
is invalid, unless ``skip_invalid`` is set, the transaction is rolled back so
the pool is exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import Connection, Engine, insert, select, update

from promomail.pools.admin.lifecycle import load_pool
from promomail.pools.choices import FileFormat, Whitespace
from promomail.pools.codes.counts import PoolCounts, pool_counts
from promomail.pools.codes.files import WHITESPACE_AT_ENDS, Block, format_for, parse
from promomail.pools.errors import (
    ImportRejected,
    LineProblem,
    PoolError,
    UnreadableFile,
    UnreadableUpload,
)
from promomail.pools.local_files import open_binary
from promomail.pools.store.clock import iso_seconds, utcnow
from promomail.pools.store.code_loading import insert_codes
from promomail.pools.store.db import bulk_loading, read_transaction, write_transaction
from promomail.pools.store.models import ImportBatch, PoolStatus

#: Problems kept for the report; the count of all problems is always exact.
MAX_REPORTED_PROBLEMS = 1000


@dataclass
class ImportReport:
    source: str
    format: str
    batch: int | None = None
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: list[LineProblem] = field(default_factory=list)
    rejected_count: int = 0
    #: Lines refused for whitespace at their ends: the refusal names the option for them.
    whitespace_rejected: int = 0
    total: int = 0
    available: int = 0
    #: Why nothing of the file was stored (an all-or-nothing upload with
    #: invalid lines); None for a stored file.
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as front ends show it; a refused file says so and why."""
        document: dict[str, Any] = {"batch": self.batch, "file": self.source, "format": self.format}
        if self.error is None:
            document["lines"] = self.lines
        document |= {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [{"line": p.line, "reason": p.reason} for p in self.rejected],
            "rejected_count": self.rejected_count,
            "total": self.total,
            "available": self.available,
        }
        if self.error is not None:
            document |= {"stored": False, "error": self.error}
        return document


def rejected_report(
    engine: Engine,
    pool_id: str,
    error: ImportRejected,
    fmt: str | None = None,
    name: Callable[[str], str] = str,
) -> ImportReport:
    """The report of a refused upload: its problems, and the pool as it still is.

    ``name`` shows a setting as the front end calls it (see :meth:`NamesSettings.naming`).
    """
    with read_transaction(engine) as conn:
        counts = pool_counts(conn, [pool_id]).get(pool_id)
    return ImportReport(
        error.source,
        format_for(error.source, fmt),
        rejected=list(error.problems),
        rejected_count=error.total_problems,
        total=counts.total if counts else 0,
        available=counts.available if counts else 0,
        error=error.naming(name),
    )


def uploads_document(reports: Sequence[ImportReport], *, several: bool) -> Any:
    """One file: its report; several: ``{"uploads": [...], "total", "available"}``."""
    if not several:
        return reports[0].as_dict()
    last = reports[-1] if reports else None
    return {
        "uploads": [r.as_dict() for r in reports],
        "total": last.total if last else 0,
        "available": last.available if last else 0,
    }


#: Told the number of bytes read, after each read of a file being uploaded.
ProgressCallback = Callable[[int], None]


class _MeteredStream:
    """A binary stream that tells how much of it was read."""

    def __init__(self, stream: BinaryIO, progress: ProgressCallback) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._progress(len(data))
        return data


def total_size(uploads: Sequence[Upload]) -> int | None:
    """Bytes of all the files, when every size is known (for a progress bar)."""
    sizes = [upload.size() for upload in uploads]
    return None if None in sizes else sum(size or 0 for size in sizes)


@dataclass(frozen=True)
class Upload:
    """One file to load: its name for reports, and how to open it."""

    source: str
    format: FileFormat
    path: Path | None = None
    stream: BinaryIO | None = None

    @classmethod
    def from_path(cls, path: str | Path, fmt: str | None = None) -> Upload:
        return cls(str(path), format_for(str(path), fmt), path=Path(path))

    def size(self) -> int | None:
        """Bytes to read, when known beforehand (a file; not a pipe)."""
        if self.path is None:
            return None
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    def open(self, stack: ExitStack, progress: ProgressCallback | None = None) -> BinaryIO:
        stream = self._open(stack)
        if progress is None:
            return stream
        return cast(BinaryIO, _MeteredStream(stream, progress))

    def _open(self, stack: ExitStack) -> BinaryIO:
        if self.stream is not None:
            return self.stream
        assert self.path is not None
        try:
            # A regular file: a device never ends (``-`` streams a pipe instead).
            return stack.enter_context(open_binary(self.path))
        except OSError as exc:
            raise PoolError(f"{self.source}: cannot read ({exc.strerror})") from exc


def upload_codes(
    engine: Engine,
    pool_id: str,
    uploads: Iterable[Upload],
    *,
    whitespace: Whitespace = Whitespace.REJECT,
    skip_invalid: bool = False,
    progress: ProgressCallback | None = None,
) -> list[ImportReport]:
    """Load every file in one transaction; one import batch per file.

    ``progress``, when given, is told the bytes read as the files are read.
    """
    reports: list[ImportReport] = []
    now = utcnow()
    with write_transaction(engine) as conn, bulk_loading(conn), ExitStack() as files:
        pool = load_pool(conn, pool_id)
        if pool.status == PoolStatus.ARCHIVED:
            raise PoolError(f"pool {pool_id!r} is archived: no more codes can be added")
        # Counted before the load, while the new codes are not there to read.
        before = pool_counts(conn, [pool_id], now).get(pool_id, PoolCounts())
        for upload in uploads:
            report = ImportReport(upload.source, upload.format)
            try:
                _store(
                    conn,
                    pool_id,
                    report,
                    parse(upload.open(files, progress), upload.format, whitespace),
                )
            except UnreadableFile as exc:
                raise UnreadableUpload(f"{upload.source}: {exc}; nothing was stored") from exc
            if report.rejected_count and not skip_invalid:
                raise ImportRejected(
                    upload.source,
                    report.rejected,
                    report.rejected_count,
                    whitespace=report.whitespace_rejected > 0,
                )
            reports.append(report)
        counts = before + _added_counts(conn, pool_id, reports, now)
        for report in reports:
            report.total = counts.total
            report.available = counts.available
    return reports


def _added_counts(
    conn: Connection, pool_id: str, reports: Sequence[ImportReport], now: datetime
) -> PoolCounts:
    """What the upload's codes add to the pool's counts, without counting the pool again.

    A txt file's codes go in available and without a window (``insert_codes``),
    so each accepted one adds one to the total and one to the available codes;
    a csv file's windows put its codes in one state or another, counted in the
    database over that file's batch only. On SQLite the upload holds the write
    lock, so the counts before plus these are the pool's counts after; on
    PostgreSQL they are the pool as the upload found it plus what it stored.
    """
    plain = sum(r.accepted for r in reports if r.format != FileFormat.CSV)
    added = PoolCounts(total=plain, available=plain)
    windowed = [r.batch for r in reports if r.format == FileFormat.CSV and r.batch is not None]
    if windowed:
        counted = pool_counts(conn, [pool_id], now, batch_ids=windowed)
        added += counted.get(pool_id, PoolCounts())
    return added


def pool_document(engine: Engine, pool_id: str) -> dict[str, Any]:
    """What ``pool show`` reports: the pool's settings and counts, and its import history."""
    with read_transaction(engine) as conn:
        view = load_pool(conn, pool_id, with_counts=True)
        history = history_in(conn, pool_id)
    return {**view.as_dict(), "imports": [asdict(record) for record in history]}


def _store(conn: Connection, pool_id: str, report: ImportReport, blocks: Iterable[Block]) -> None:
    batch_id = conn.execute(
        insert(ImportBatch)
        .values(pool_id=pool_id, source=report.source, format=report.format, created_at=utcnow())
        .returning(ImportBatch.id)
    ).scalar_one()
    report.batch = batch_id
    valid = 0
    for block in blocks:
        report.lines += block.lines
        report.rejected_count += len(block.problems)
        report.whitespace_rejected += sum(p.reason == WHITESPACE_AT_ENDS for p in block.problems)
        room = MAX_REPORTED_PROBLEMS - len(report.rejected)
        report.rejected.extend(block.problems[: max(room, 0)])
        valid += len(block.codes) + len(block.rows)
        report.accepted += insert_codes(conn, pool_id, batch_id, block.rows, block.codes)
    report.duplicates = valid - report.accepted
    conn.execute(
        update(ImportBatch)
        .where(ImportBatch.id == batch_id)
        .values(
            accepted=report.accepted,
            duplicates=report.duplicates,
            rejected=report.rejected_count,
        )
    )


@dataclass(frozen=True)
class ImportRecord:
    batch: int
    file: str
    format: str
    accepted: int
    duplicates: int
    rejected: int
    created_at: str
    voided_at: str | None


def import_history(engine: Engine, pool_id: str) -> list[ImportRecord]:
    with read_transaction(engine) as conn:
        load_pool(conn, pool_id)
        return history_in(conn, pool_id)


def history_in(conn: Connection, pool_id: str) -> list[ImportRecord]:
    rows = conn.execute(
        select(ImportBatch).where(ImportBatch.pool_id == pool_id).order_by(ImportBatch.id)
    )
    return [
        ImportRecord(
            r.id,
            r.source,
            r.format,
            r.accepted,
            r.duplicates,
            r.rejected,
            iso_seconds(r.created_at),
            iso_seconds(r.voided_at),
        )
        for r in rows
    ]
