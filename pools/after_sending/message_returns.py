"""The codes of single messages that were never delivered, given back by reference.

A relay's 5xx (``send``) or a service's bounce (a webhook, a DSN) names one
message by its delivery reference; :func:`return_messages` gives back the
codes of many such messages at once, by ``mailing return``'s rules
(:mod:`pools.after_sending.returns`). Only the codes stamped with a
message's own reference go back: a code its recipient got later, in a
message with another reference, is never touched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, String, bindparam, exists, or_, select, update
from sqlalchemy.orm import aliased

from promomail.pools.store.models import Code, CodeStatus, Issuance, IssuanceKind
from promomail.pools.store.row_sets import RowSet, one_of, per_dialect

#: Each message given back, with its reason.
_MESSAGES = RowSet("messages", ref=String(), reason=String())
#: The initial issuances whose codes went back.
_FREED = RowSet("freed", id=BigInteger())


def return_messages(conn: Connection, reasons: Mapping[str, str], now: datetime) -> Counter[str]:
    """Give back the codes of the messages named by reference (each with its
    reason); how many went back, per reference.

    Three statements however many messages there are (a webhook's batch of
    bounces): the issuances that may go back are found in one, their codes
    freed in another, and the freed issuances, with the messages' reissue
    records (the message that showed an older code again was not delivered
    either), marked returned in the third.
    """
    if not reasons:
        return Counter()
    refs = sorted(reasons)
    candidates = conn.execute(_candidates(conn, refs)).all()
    freed_codes: set[int] = set()
    if candidates:
        freed_codes = set(
            conn.execute(
                update(Code)
                .where(
                    one_of(conn, Code.id, [code for _, code, _ in candidates]),
                    Code.status == CodeStatus.ISSUED,
                    Code.redemptions == 0,
                )
                .values(status=CodeStatus.AVAILABLE, reserved_token=None)
                .returning(Code.id)
            ).scalars()
        )
    returned: Counter[str] = Counter()
    freed: list[tuple[int]] = []
    for ref, code, issuance in candidates:
        if code in freed_codes:
            returned[ref] += 1
            freed.append((issuance,))
    conn.execute(
        _mark_returned(conn),
        {
            "now": now,
            **_MESSAGES.bind(conn, [(ref, reasons[ref]) for ref in refs]),
            **_FREED.bind(conn, freed),
        },
    )
    return returned


def _candidates(conn: Connection, refs: Sequence[str]) -> Any:
    """(ref, code, issuance) of the messages' single-use codes that may go back:
    live initial issuances whose code no other mailing showed again."""
    other = aliased(Issuance)
    shown_elsewhere = exists().where(
        other.code_id == Issuance.code_id,
        other.kind == IssuanceKind.REISSUE,
        other.mailing_id != Issuance.mailing_id,
        other.returned_at.is_(None),
    )
    return (
        select(Issuance.ref, Issuance.code_id, Issuance.id)
        .where(
            one_of(conn, Issuance.ref, refs),
            Issuance.kind == IssuanceKind.INITIAL,
            Issuance.returned_at.is_(None),
            Issuance.exclusive,
            ~shown_elsewhere,
        )
        .order_by(Issuance.ref, Issuance.code_id)
    )


@per_dialect
def _mark_returned(postgres: bool) -> Any:
    """The messages' freed initial issuances and their reissue records, marked returned."""
    messages = _MESSAGES.table(postgres)
    freed = _FREED.table(postgres)
    return (
        update(Issuance)
        .where(
            Issuance.ref == messages.c.ref,
            Issuance.returned_at.is_(None),
            or_(
                Issuance.kind == IssuanceKind.REISSUE,
                Issuance.id.in_(select(freed.c.id)),
            ),
        )
        .values(returned_at=bindparam("now"), return_reason=messages.c.reason)
    )
