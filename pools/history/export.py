"""The issuance log as CSV: who got which code, when, and whether it was redeemed.

Rows stream from the database to the file (memory stays flat for any log
size), and the file appears only once complete: it is written next to its
destination under a temporary name and renamed into place, so a failure
leaves no half-written export behind (and an older export at that path
untouched).

``redeemed`` holds the time of the redemption (ISO 8601, UTC), empty when
the code was not redeemed. For a multi-use code it is the time this
customer first redeemed it, since the code itself is shared. ``returned_at``
is set when the message was never delivered and the code went back to its
pool (empty while the issuance is live); a returned issuance shows no
redemption, since whoever redeems the code later was not given it here.

The export is meant to be opened by people, in spreadsheets, and its values
come from outside (customer ids, codes, mailing ids): a value beginning
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (or their
full-width forms) would run as a formula there ("CSV injection", OWASP).
Such a value is written with a single quote in front (``'=HYPERLINK(…)``),
which spreadsheets show as text; a value that itself begins with a single
quote gets one too, so removing exactly one leading quote from a cell that
starts with one always gives the stored value back. Segment files
(:mod:`pools.history.segments`) are for machines and are written exactly.
"""

from __future__ import annotations

import contextlib
import csv
import os
import uuid
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Connection, Engine, Select, case, exists, func, select

from promomail.pools.admin.lookup import unknown_mailing, unknown_pool
from promomail.pools.errors import ExportError, MailingNotFound
from promomail.pools.store.clock import iso_seconds
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Code, Issuance, Mailing, Pool, Redemption

COLUMNS = ("issued_at", "pool", "code", "customer", "mailing", "kind", "redeemed", "returned_at")
#: What a spreadsheet may take as the start of a formula, and the quote that marks
#: a neutralised value (so it is itself quoted when a value starts with it).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
NEUTRALISING_QUOTE = "'"
_FETCH_ROWS = 1000


def spreadsheet_safe(value: str) -> str:
    """``value`` as a spreadsheet shows it as text: never the start of a formula."""
    if value.startswith((*FORMULA_STARTS, NEUTRALISING_QUOTE)):
        return NEUTRALISING_QUOTE + value
    return value


def _cell(moment: datetime | None) -> str:
    """A moment as a CSV cell: blank for none."""
    return iso_seconds(moment) or ""


def export_issuances(
    engine: Engine,
    out_path: str | os.PathLike[str],
    *,
    pool: str | None = None,
    mailing: str | None = None,
) -> int:
    """Write the issuance log (optionally one pool's, one mailing's) to ``out_path``.

    Returns the number of rows written, header excluded.
    """
    target = Path(out_path)
    folder = target.parent
    if not folder.is_dir():
        raise ExportError(f"cannot write {target}: folder {folder} does not exist")
    with read_transaction(engine) as conn:
        check_filters(conn, pool, mailing)
        # Created like any new file (the umask applies), unlike mkstemp's 0600.
        temporary = folder / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise ExportError(f"cannot write {target}: {exc.strerror}") from exc
        try:
            with open(descriptor, "w", encoding="utf-8", newline="") as handle:
                count = write_issuances(conn, handle, pool=pool, mailing=mailing)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if isinstance(exc, OSError):
                raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from exc
            raise
    return count


def check_filters(
    conn: Connection,
    pool: str | None,
    mailing: str | None,
    within: Collection[str] | None = None,
) -> None:
    """A filter naming nothing is a typo, not an empty export.

    ``within``: the pools the asker can see, the only ones a refusal may suggest.
    """
    if pool is not None and conn.execute(select(Pool.id).where(Pool.id == pool)).first() is None:
        raise unknown_pool(conn, pool, within)
    if mailing is not None:
        known = conn.execute(
            select(
                exists().where(Mailing.id == mailing)
                | exists().where(Issuance.mailing_id == mailing)
            )
        ).scalar()
        if not known:
            # Suggestions only to a view of the whole store.
            raise MailingNotFound(mailing) if within is not None else unknown_mailing(conn, mailing)


def issuance_query(*, pool: str | None = None, mailing: str | None = None) -> Select[Any]:
    """The issuance log's rows (the columns of :data:`COLUMNS`, then the issuance id)."""
    own_redemption = (
        select(func.min(Redemption.redeemed_at))
        .where(
            Redemption.code_id == Issuance.code_id,
            Redemption.redeemed_by == Issuance.customer_id,
            Redemption.rolled_back_at.is_(None),
        )
        .scalar_subquery()
    )
    redeemed = case(
        (Issuance.returned_at.is_not(None), None),
        (Pool.multi_use, own_redemption),
        else_=Code.redeemed_at,
    )
    query = (
        select(
            Issuance.issued_at,
            Issuance.pool_id,
            Code.code,
            Issuance.customer_id,
            Issuance.mailing_id,
            Issuance.kind,
            redeemed,
            Issuance.returned_at,
            Issuance.id,
        )
        .join(Code, Code.id == Issuance.code_id)
        .join(Pool, Pool.id == Issuance.pool_id)
        .order_by(Issuance.id)
    )
    if pool is not None:
        query = query.where(Issuance.pool_id == pool)
    if mailing is not None:
        query = query.where(Issuance.mailing_id == mailing)
    return query


def issuance_values(row: Any) -> list[str]:
    """One row of :func:`issuance_query` as the export's cells."""
    issued_at, pool_id, code, customer, mailing_id, kind, redeemed_at, returned_at = row[
        : len(COLUMNS)
    ]
    return [
        _cell(issued_at),
        pool_id,
        code,
        customer,
        mailing_id,
        kind,
        _cell(redeemed_at),
        _cell(returned_at),
    ]


def write_issuances(
    conn: Connection, out: TextIO, *, pool: str | None = None, mailing: str | None = None
) -> int:
    """Stream the issuance log as CSV to ``out`` (opened with ``newline=''``)."""
    query = issuance_query(pool=pool, mailing=mailing)
    writer = csv.writer(out, lineterminator="\n")
    # A lone "\r" inside a value is not quoted by the writer, and a
    # spreadsheet would start a new row there, the rest of the value then
    # beginning a cell of its own: such rows are written fully quoted.
    quoting = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(COLUMNS)
    count = 0
    result = conn.execution_options(stream_results=True, yield_per=_FETCH_ROWS).execute(query)
    for row in result:
        safe = [spreadsheet_safe(cell) for cell in issuance_values(row)]
        (quoting if any("\r" in cell for cell in safe) else writer).writerow(safe)
        count += 1
    return count
