"""Codes of messages that were never delivered go back to their pools.

``mailing return`` (hard bounces, suppressed addresses) and ``mailing
cancel`` (the mailing was never sent) give back the codes a mailing issued.
Only a code nobody can have seen goes back: a single-use code never
redeemed and never shown to its customer again by another mailing (a
reissue). The others are kept and counted by why. A returned issuance stays
in the history, marked with the time and reason; the code becomes
``available`` again, so every count and the next render see it, and a later
run of the same mailing gives that recipient a new code (the mailing's
unique index covers live issuances only). That new issuance takes whatever
code the pool hands out next, in the usual order (soonest-expiring, then
oldest import), so it may be the very code that came back: nobody ever saw
it, and the pool's order is not bent for it.

The code goes back with a conditional ``UPDATE … WHERE status = 'issued' AND
redemptions = 0``, so a redemption racing the return either comes first
(the code is kept as redeemed) or finds the code back in its pool.
The mailing's own reissue records for those recipients are marked returned
too: the message that showed the older code was not delivered either.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, and_, bindparam, case, exists, func, select, update
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from promomail.pools.admin.lookup import unknown_mailing
from promomail.pools.choices import EMAIL_COLUMNS, ID_COLUMNS
from promomail.pools.digests import Digest, digest
from promomail.pools.errors import ReturnListError
from promomail.pools.identifiers import id_problem
from promomail.pools.local_files import LineTooLong, bounded_lines, open_text
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import write_transaction
from promomail.pools.store.models import Code, CodeStatus, Issuance, IssuanceKind, Mailing
from promomail.pools.tables import (
    TableError,
    describe_columns,
    find_columns,
    has_column,
    sniff_delimiter,
    take_sample,
)

#: Customer ids per statement: far below every database's bound-parameter limit.
_CHUNK = 500
CANCELLED = "mailing cancelled"


@dataclass(frozen=True)
class KeptCodes:
    """Codes that stay with their customers, by why."""

    redeemed: int = 0
    reissued: int = 0
    multi_use: int = 0


@dataclass(frozen=True)
class ReturnReport:
    """What a return or cancel did: codes back in their pools, codes kept."""

    mailing: str
    returned: int
    kept: KeptCodes
    #: Listed recipients this mailing holds no live code for (never issued, or returned before).
    not_issued: int = 0
    #: Lines of the list whose address no recipient of the mailing has.
    unmatched: tuple[Unmatched, ...] = ()
    #: The list the recipients came from (a file), when they came from one.
    source: str | None = None

    def unmatched_error(self) -> str | None:
        """The one line that says the return was partial, or None when every line matched."""
        if not self.unmatched:
            return None
        source = self.source or "the list"
        if len(self.unmatched) == 1:
            [(line, address)] = self.unmatched
            return (
                f"{source}, line {line}: no recipient of mailing {self.mailing!r} has the "
                f"address {address!r}: nothing was returned for it; the other recipients' "
                "codes went back"
            )
        lines = ", ".join(str(u.line) for u in self.unmatched[:5])
        more = ", …" if len(self.unmatched) > 5 else ""
        return (
            f"{len(self.unmatched):,} addresses of {source} (lines {lines}{more}) match no "
            f"recipient of mailing {self.mailing!r}: nothing was returned for them; the other "
            "recipients' codes went back"
        )

    def unmatched_digest(self) -> Digest:
        """The unmatched lines for a person: a few, then how many."""
        source = self.source or "the list"
        return digest(
            self.unmatched,
            lambda u: (
                f"{source}, line {u.line}: no recipient of mailing {self.mailing!r} "
                f"has the address {u.address!r}; nothing returned for it"
            ),
            lambda _u: f"an address no recipient of mailing {self.mailing!r} has",
        )

    def as_dict(self) -> dict[str, object]:
        """The document ``mailing return --json`` and ``mailing cancel --json`` print.

        A return from a list also names the list's lines that matched nobody
        (``unmatched``: ``[{"line", "address"}]``).
        """
        document: dict[str, object] = {
            "mailing": self.mailing,
            "returned": self.returned,
            "kept": {
                "redeemed": self.kept.redeemed,
                "reissued": self.kept.reissued,
                "multi_use": self.kept.multi_use,
            },
        }
        if self.source is not None:
            document["unmatched"] = [u.as_dict() for u in self.unmatched]
        return document


def return_codes(
    engine: Engine,
    mailing_id: str,
    recipients: Iterable[str],
    *,
    reason: str | None,
    now: datetime | None = None,
) -> ReturnReport:
    """Give back the codes ``mailing_id`` issued to ``recipients`` (undelivered messages).

    All in one transaction; raises :class:`MailingNotFound` when the mailing
    does not exist. Recipients the mailing gave nothing are counted in
    ``not_issued`` and otherwise ignored.
    """
    ids = list(dict.fromkeys(recipients))
    moment = now or utcnow()
    with write_transaction(engine) as conn:
        _require_mailing(conn, mailing_id)
        totals = _Totals()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            totals.add(_return_in(conn, mailing_id, chunk, reason, moment))
        return totals.report(mailing_id)


def cancel_mailing(
    engine: Engine, mailing_id: str, *, reason: str | None = None, now: datetime | None = None
) -> ReturnReport:
    """Give back every code ``mailing_id`` issued: the mailing was never sent."""
    moment = now or utcnow()
    with write_transaction(engine) as conn:
        _require_mailing(conn, mailing_id)
        totals = _Totals()
        totals.add(_return_in(conn, mailing_id, None, reason or CANCELLED, moment))
        conn.execute(update(Mailing).where(Mailing.id == mailing_id).values(cancelled_at=moment))
        return totals.report(mailing_id)


def _require_mailing(conn: Connection, mailing_id: str) -> None:
    known = conn.execute(
        select(
            exists().where(Mailing.id == mailing_id)
            | exists().where(Issuance.mailing_id == mailing_id, Issuance.returned_at.is_(None))
        )
    ).scalar()
    if not known:
        raise unknown_mailing(conn, mailing_id)


@dataclass
class _Totals:
    returned: int = 0
    redeemed: int = 0
    reissued: int = 0
    multi_use: int = 0
    listed: int = 0
    holding: int = 0

    def add(self, other: _Totals) -> None:
        for counter in fields(self):
            setattr(self, counter.name, getattr(self, counter.name) + getattr(other, counter.name))

    def report(self, mailing_id: str) -> ReturnReport:
        kept = KeptCodes(self.redeemed, self.reissued, self.multi_use)
        return ReturnReport(mailing_id, self.returned, kept, max(self.listed - self.holding, 0))


def _return_in(
    conn: Connection,
    mailing_id: str,
    customers: Sequence[str] | None,
    reason: str | None,
    now: datetime,
) -> _Totals:
    """Return one chunk of recipients (``None``: every recipient of the mailing)."""
    statements = _return_statements(customers is not None)
    params: dict[str, Any] = {"r_mailing": mailing_id, "r_now": now, "r_reason": reason}
    if customers is not None:
        params["r_customers"] = list(customers)
    holding = conn.execute(statements.holding, params).scalar_one()
    freed = list(conn.execute(statements.free_codes, params).scalars())
    for start in range(0, len(freed), _CHUNK):
        conn.execute(statements.mark_returned, {**params, "r_codes": freed[start : start + _CHUNK]})
    # What stays, by why: multi-use first, then redeemed; a single-use code
    # neither redeemed nor returned was shown again by another mailing.
    kept = conn.execute(statements.kept, params).one()
    # The message that showed an older code again was not delivered either.
    conn.execute(statements.reissues_returned, params)
    return _Totals(
        returned=len(freed),
        multi_use=int(kept[0]),
        redeemed=int(kept[1]),
        reissued=int(kept[2]),
        listed=len(customers) if customers is not None else 0,
        holding=int(holding),
    )


@dataclass(frozen=True)
class _ReturnStatements:
    holding: Any
    free_codes: Any
    mark_returned: Any
    kept: Any
    reissues_returned: Any


@functools.cache
def _return_statements(by_customers: bool) -> _ReturnStatements:
    """The statements of a return, built once per shape.

    Parameters: ``r_mailing``, ``r_now``, ``r_reason``, and ``r_customers``
    (a list), ``r_codes`` (a list) where the shape has them.
    """

    def live(kind: IssuanceKind) -> list[ColumnElement[bool]]:
        conditions = [
            Issuance.mailing_id == bindparam("r_mailing"),
            Issuance.kind == kind,
            Issuance.returned_at.is_(None),
        ]
        if by_customers:
            conditions.append(Issuance.customer_id.in_(bindparam("r_customers", expanding=True)))
        return conditions

    returned: dict[str, Any] = {
        "returned_at": bindparam("r_now"),
        "return_reason": bindparam("r_reason"),
    }
    other = aliased(Issuance)
    shown_elsewhere = exists().where(
        other.code_id == Code.id,
        other.kind == IssuanceKind.REISSUE,
        other.mailing_id != bindparam("r_mailing"),
        other.returned_at.is_(None),
    )
    held = select(Issuance.code_id).where(*live(IssuanceKind.INITIAL), Issuance.exclusive)
    return _ReturnStatements(
        holding=select(func.count(func.distinct(Issuance.customer_id))).where(
            *live(IssuanceKind.INITIAL)
        ),
        free_codes=update(Code)
        .where(
            Code.id.in_(held),
            Code.status == CodeStatus.ISSUED,
            Code.redemptions == 0,
            ~shown_elsewhere,
        )
        .values(status=CodeStatus.AVAILABLE, reserved_token=None)
        .returning(Code.id),
        mark_returned=update(Issuance)
        .where(
            *live(IssuanceKind.INITIAL),
            Issuance.code_id.in_(bindparam("r_codes", expanding=True)),
        )
        .values(**returned),
        kept=select(
            _count(~Issuance.exclusive),
            _count(and_(Issuance.exclusive, Code.redemptions > 0)),
            _count(and_(Issuance.exclusive, Code.redemptions == 0)),
        )
        .join(Code, Code.id == Issuance.code_id)
        .where(*live(IssuanceKind.INITIAL)),
        reissues_returned=update(Issuance).where(*live(IssuanceKind.REISSUE)).values(**returned),
    )


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


# ---------------------------------------------------------------------------
# Reading who bounced: a recipients file, or a bounce list with ids or addresses
# ---------------------------------------------------------------------------

#: Characters one line of a return list may hold (a file with no line end is not read whole).
MAX_LINE_CHARS = 1 << 20


@dataclass(frozen=True)
class ReturnList:
    """Who a return is for: recipient ids, and addresses still to be matched to ids."""

    source: str
    ids: list[str]
    #: (line, address) of rows with an address but no id.
    emails: list[tuple[int, str]]


def read_return_list(path: str | os.PathLike[str]) -> ReturnList:
    """Read a recipients file or a bounce list (CSV with a header, or JSON Lines).

    A row names its recipient by id (columns :data:`ID_COLUMNS`) or, lacking
    one, by e-mail address (:data:`EMAIL_COLUMNS`), the names in any case;
    ``.jsonl``/``.ndjson``/``.json`` files hold one object per line with the
    same keys. A CSV file's separator is sniffed (``,`` ``;`` tab ``|``), as
    the recipients reader does (:mod:`pools.tables`).
    """
    source = Path(path)
    try:
        with open_text(source, encoding="utf-8-sig", newline="") as handle:
            lines = bounded_lines(handle, MAX_LINE_CHARS)
            if source.suffix.lower() in (".jsonl", ".ndjson", ".json"):
                rows = _json_rows(source, lines)
            else:
                rows = _csv_rows(source, lines)
            ids: list[str] = []
            emails: list[tuple[int, str]] = []
            for line, id_values, email_values in rows:
                found_id = _first(id_values)
                found_email = _first(email_values)
                if found_id:
                    # The rule the recipients reader applies: an id it would
                    # refuse names no recipient this store could have rendered.
                    problem = id_problem(found_id)
                    if problem is not None:
                        raise ReturnListError(f"{source}, line {line}: {problem}")
                    ids.append(found_id)
                elif found_email:
                    emails.append((line, found_email))
                else:
                    raise ReturnListError(f"{source}, line {line}: no recipient id or e-mail")
    except OSError as exc:
        raise ReturnListError(f"{source}: cannot read ({exc.strerror})") from exc
    except LineTooLong as exc:
        raise ReturnListError(f"{source}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReturnListError(f"{source}: not UTF-8 text ({exc.reason})") from exc
    except TableError as exc:
        raise ReturnListError(str(exc)) from exc
    return ReturnList(str(source), ids, emails)


#: A row of a return list: its line, then its values in the id columns and in
#: the address columns (each in the order of :data:`ID_COLUMNS`, :data:`EMAIL_COLUMNS`).
_Row = tuple[int, list[str], list[str]]


def _first(values: Sequence[str]) -> str:
    return next((value for value in values if value), "")


def _csv_rows(source: Path, lines: Iterator[str]) -> Iterator[_Row]:
    sample, complete = take_sample(lines)
    delimiter = sniff_delimiter(
        sample, complete, lambda names: has_column(names, _ANY_COLUMN), source=str(source)
    )
    reader = csv.reader(chain(sample, lines), delimiter=delimiter, strict=True)
    try:
        header = next(reader, [])
        id_columns = find_columns(header, ID_COLUMNS, source=str(source))
        email_columns = find_columns(header, EMAIL_COLUMNS, source=str(source))
        if not id_columns and not email_columns:
            raise ReturnListError(
                f"{source}, line 1: the header names no recipient column: use one of "
                f"{', '.join(ID_COLUMNS)} or {', '.join(EMAIL_COLUMNS)} (any case); the "
                f"columns found: {describe_columns([name.strip() for name in header])}"
            )
        previous = reader.line_num
        for row in reader:
            # Where the record starts: a quoted value may span lines.
            line, previous = previous + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            yield (
                line,
                [row[i].strip() for i in id_columns if i < len(row)],
                [row[i].strip() for i in email_columns if i < len(row)],
            )
    except csv.Error as exc:
        raise ReturnListError(f"{source}, line {reader.line_num}: malformed CSV ({exc})") from exc


#: Every column name that names a recipient.
_ANY_COLUMN = (*ID_COLUMNS, *EMAIL_COLUMNS)


def _json_rows(source: Path, handle: Iterator[str]) -> Iterator[_Row]:
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReturnListError(f"{source}, line {line}: not JSON ({exc.msg})") from exc
        if not isinstance(value, dict):
            raise ReturnListError(f"{source}, line {line}: not a JSON object")
        nested = next((k for k, v in value.items() if isinstance(v, (dict, list))), None)
        if nested is not None:
            raise ReturnListError(f"{source}, line {line}: {nested!r} holds a nested JSON value")
        keys = list(value)
        cells = [str(v).strip() if v is not None else "" for v in value.values()]
        id_keys = find_columns(keys, ID_COLUMNS, source=str(source), line=line, noun="key")
        email_keys = find_columns(keys, EMAIL_COLUMNS, source=str(source), line=line, noun="key")
        yield line, [cells[i] for i in id_keys], [cells[i] for i in email_keys]


class Unmatched(NamedTuple):
    """A line of a return list whose address no recipient of the mailing has."""

    line: int
    address: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "address": self.address}


@dataclass(frozen=True)
class AddressMatch:
    """A return list's recipient ids, and the lines whose address matched nobody."""

    ids: list[str]
    unmatched: list[Unmatched]


def match_addresses(
    returns: ReturnList, directory: Iterable[tuple[str, str | None]]
) -> AddressMatch:
    """The recipient ids of a return list, its addresses matched through ``directory``.

    ``directory`` gives (id, e-mail) of the mailing's recipients (its
    recipients file). Addresses match case-insensitively. An address no
    recipient has is kept with its line in ``unmatched``: the others' codes
    still go back (a bounce list often holds addresses of other mailings),
    and the caller says which lines matched nobody.
    """
    ids = list(returns.ids)
    if not returns.emails:
        return AddressMatch(ids, [])
    by_address: dict[str, str] = {}
    for recipient_id, address in directory:
        if address:
            by_address.setdefault(address.strip().casefold(), recipient_id)
    unmatched: list[Unmatched] = []
    for line, address in returns.emails:
        matched = by_address.get(address.casefold())
        if matched is None:
            unmatched.append(Unmatched(line, address))
        else:
            ids.append(matched)
    return AddressMatch(ids, unmatched)
