"""What became of each rendered message: the relay's answers and the mail services' events.

A message is named by its delivery reference (:mod:`pools.after_sending.references`),
which every issuance it recorded carries. Its row in ``deliveries`` is
written by ``send`` as the relay answers (:func:`record_send`) and by the
services' events (:mod:`pools.after_sending.delivery_events`); an event applies whether or not
``send`` sent the message, and creates the row from the issuances when
there is none.

The states and how they move, every move a conditional ``UPDATE … WHERE
status IN (…)`` so that concurrent writers (two webhooks about one message,
a webhook and ``send``) make it once:

* ``send``: ``sent`` (the relay accepted it), ``deferred`` (a 4xx or a
  dropped connection: sent again by a later run) or ``failed`` (a 5xx: its
  codes go back at once). Only a message never accepted and ``deferred``
  (or never recorded) is sent again.
* events: a permanent failure of a message ``sent`` or ``deferred`` makes it
  ``bounced`` and gives its codes back; a transient one makes it
  ``deferred`` (the service is retrying; it is never sent again from here);
  a delivery or a complaint makes it ``delivered`` (the person got it: the
  codes stay). Any other event about it records its answer and changes
  nothing else: a ``delivered`` message never turns ``bounced``, and a
  ``failed`` or ``bounced`` one gave its codes back already.

Invariant 12 rests on two things: a message's codes go back only in the
one transaction that moves it into ``failed`` or ``bounced``, which happens
at most once; and only the issuances stamped with its reference go back,
so a code the recipient got later, in a message with another reference,
is never touched by an event about an earlier one.

Pure store work: no SMTP, no HTTP, no mail service's format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    bindparam,
    exists,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from promomail.pools.admin.lookup import unknown_mailing
from promomail.pools.after_sending.message_returns import return_messages
from promomail.pools.after_sending.returns import _count
from promomail.pools.choices import DeliveryStatus
from promomail.pools.errors import InvalidSetting
from promomail.pools.store.clock import iso_seconds, utcnow
from promomail.pools.store.db import (
    is_postgres,
    one_statement_write,
    read_transaction,
    write_transaction,
)
from promomail.pools.store.models import Delivery, Mailing
from promomail.pools.store.row_sets import RowSet, one_of, per_dialect

SendState = Literal["sent", "deferred", "failed"]

SEND_STATES: tuple[str, ...] = ("sent", "deferred", "failed")
#: The length of a stored answer: a relay's or service's text, shown, never parsed.
ANSWER_MAX = 2000
#: References per statement.
_CHUNK = 500

#: The states an event (or a 5xx) may still move a message out of.
OPEN_STATES = (DeliveryStatus.SENT, DeliveryStatus.DEFERRED)


def to_send(engine: Engine, mailing_id: str, refs: Iterable[str]) -> set[str]:
    """The references among ``refs`` that ``send`` must (still) send.

    Left out: every message a relay or service ever had (``sent`` and what
    events made of it, a service's ``deferred`` included) and every
    ``failed`` one. A message the relay deferred, or never recorded, is in.
    """
    wanted = list(dict.fromkeys(refs))
    done: set[str] = set()
    with read_transaction(engine) as conn:
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            done.update(
                conn.execute(
                    select(Delivery.ref).where(
                        one_of(conn, Delivery.ref, chunk),
                        Delivery.mailing_id == mailing_id,
                        Delivery.accepted | (Delivery.status != DeliveryStatus.DEFERRED),
                    )
                ).scalars()
            )
    return {ref for ref in wanted if ref not in done}


def record_send(
    engine: Engine,
    *,
    mailing_id: str,
    recipient_id: str,
    ref: str,
    state: SendState,
    answer: str,
    now: datetime | None = None,
) -> int:
    """Record the relay's answer about one message; returns the codes given back.

    ``failed`` (a 5xx for that recipient: never delivered) gives the
    message's codes back by the rules of ``mailing return``, the relay's
    answer as the reason, in the same transaction. Only a message not yet
    accepted is changed: an answer about one already ``sent``, ``failed``
    or reported on by an event changes nothing.
    """
    if state not in SEND_STATES:
        raise InvalidSetting(f"must be one of {', '.join(SEND_STATES)}, not {state!r}", "state")
    moment = now or utcnow()
    text = answer[:ANSWER_MAX]
    with write_transaction(engine) as conn:
        moved = insert_if_new(
            conn,
            Delivery.__table__,
            {
                "ref": ref,
                "mailing_id": mailing_id,
                "recipient_id": recipient_id,
                "status": state,
                "answer": text,
                "attempts": 1,
                "accepted": state == "sent",
                "updated_at": moment,
                "codes_returned": 0,
            },
        )
        if not moved:
            moved = _move(
                conn,
                ref,
                DeliveryStatus(state),
                (DeliveryStatus.DEFERRED,),
                text,
                moment,
                accepted=state == "sent",
                attempt=True,
                only_unaccepted=True,
            )
        if moved and state == "failed":
            return give_back(conn, {ref: f"refused by the relay: {text}"}, moment)[ref]
        return 0


def record_sent(
    engine: Engine,
    mailing_id: str,
    accepted: Sequence[tuple[str, str, str]],
    *,
    now: datetime | None = None,
) -> None:
    """Record that the relay accepted each (ref, recipient, answer).

    The same rules as :func:`record_send` with ``sent`` for each message (a
    message already settled is left as it is); a 250 gives nothing back, so
    many of them share one write. The new rows go in as one multi-row
    ``INSERT … ON CONFLICT DO NOTHING``, a transaction of its own (one round
    trip on PostgreSQL); only a message that has a row already (deferred by
    an earlier attempt) takes an ``UPDATE`` of its own, after it. A crash in
    between leaves such a message deferred, to be sent again: no more than
    the answers a crash loses anyway.
    """
    if not accepted:
        return
    moment = now or utcnow()
    rows = [(ref, recipient_id, answer[:ANSWER_MAX]) for ref, recipient_id, answer in accepted]
    with one_statement_write(engine) as conn:
        parameters = {"mailing": mailing_id, "moment": moment, **_ACCEPTED.bind(conn, rows)}
        inserted = set(conn.execute(_accepted_insert(conn), parameters).scalars())
    recorded_before = [row for row in rows if row[0] not in inserted]
    if not recorded_before:
        return
    with write_transaction(engine) as conn:
        for ref, _, answer in recorded_before:
            _move(
                conn,
                ref,
                DeliveryStatus.SENT,
                (DeliveryStatus.DEFERRED,),
                answer,
                moment,
                accepted=True,
                attempt=True,
                only_unaccepted=True,
            )


_INSERTS: dict[tuple[str, str], Any] = {}


def insert_statement(conn: Connection, table: Any) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING`` the primary key, built once per
    dialect and table: every call is then a compiled-cache hit (building the
    statement anew costs more than the database's own work). Given many rows,
    it is one multi-row insert that returns the keys of the new ones."""
    key = (conn.dialect.name, table.name)
    statement = _INSERTS.get(key)
    if statement is None:
        dialect_insert = postgresql.insert if is_postgres(conn) else sqlite.insert
        statement = _INSERTS[key] = (
            dialect_insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)
        )
    return statement


#: The messages the relay accepted: reference, recipient, answer.
_ACCEPTED = RowSet("accepted", ref=String(), recipient=String(), answer=String())


@per_dialect
def _accepted_insert(postgres: bool) -> Any:
    """:func:`record_sent`'s ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING
    ref``: every accepted message travels in one row-set parameter, so the
    statement's text is the same whatever the batch's size."""
    accepted = _ACCEPTED.table(postgres)
    columns = select(
        accepted.c.ref,
        bindparam("mailing", type_=String),
        accepted.c.recipient,
        literal(DeliveryStatus.SENT.value),
        accepted.c.answer,
        literal(1),
        true(),
        bindparam("moment", type_=DateTime),
        literal(0),
    ).select_from(accepted)
    # SQLite reads ``ON CONFLICT`` after a bare ``SELECT … FROM`` as a join's
    # constraint: a WHERE clause ends the SELECT.
    columns = columns.where(true())
    table = Delivery.__table__
    dialect_insert: Any = postgresql.insert if postgres else sqlite.insert
    return (
        dialect_insert(table)
        .from_select(
            [
                table.c.ref,
                table.c.mailing_id,
                table.c.recipient_id,
                table.c.status,
                table.c.answer,
                table.c.attempts,
                table.c.accepted,
                table.c.updated_at,
                table.c.codes_returned,
            ],
            columns,
        )
        .on_conflict_do_nothing()
        .returning(table.c.ref)
    )


def insert_if_new(conn: Connection, table: Any, values: dict[str, Any]) -> bool:
    """:func:`insert_if_absent` with a statement built once: True when the row was new."""
    return conn.execute(insert_statement(conn, table), values).first() is not None


def _move(
    conn: Connection,
    ref: str,
    target: DeliveryStatus,
    allowed: tuple[DeliveryStatus, ...],
    answer: str,
    now: datetime,
    *,
    accepted: bool,
    attempt: bool = False,
    only_unaccepted: bool = False,
) -> bool:
    """Move the message to ``target`` if it is in one of ``allowed``; True when it moved.

    One conditional UPDATE: of two transactions moving the same message at
    once, the second re-reads the row the first committed (PostgreSQL) or
    runs after it (SQLite), and finds it no longer allowed.
    """
    conditions = [Delivery.ref == ref, Delivery.status.in_([str(s) for s in allowed])]
    if only_unaccepted:
        conditions.append(~Delivery.accepted)
    values: dict[str, object] = {"status": str(target), "answer": answer, "updated_at": now}
    if accepted:
        values["accepted"] = True
    if attempt:
        values["attempts"] = Delivery.attempts + 1
    statement = update(Delivery).where(*conditions).values(**values).returning(Delivery.ref)
    return conn.execute(statement).first() is not None


def give_back(conn: Connection, reasons: dict[str, str], now: datetime) -> Counter[str]:
    """Give back the codes of the messages ``reasons`` names (each with its reason),
    by ``mailing return``'s rules, and count them on their delivery rows; how
    many went back, per reference."""
    returned = return_messages(
        conn, {ref: reason[:ANSWER_MAX] for ref, reason in reasons.items()}, now
    )
    if returned:
        counts = _COUNTS.bind(conn, sorted(returned.items()))
        conn.execute(_count_returned(conn), counts)
    return returned


#: How many codes went back, per message.
_COUNTS = RowSet("counts", ref=String(), returned=Integer())


@per_dialect
def _count_returned(postgres: bool) -> Any:
    counts = _COUNTS.table(postgres)
    return (
        update(Delivery)
        .where(Delivery.ref == counts.c.ref)
        .values(codes_returned=Delivery.codes_returned + counts.c.returned)
    )


@dataclass(frozen=True)
class DeliveryView:
    """One message's delivery state, as ``deliveries MAILING`` shows it."""

    ref: str
    recipient: str
    status: str
    answer: str | None
    attempts: int
    codes_returned: int
    updated_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "recipient": self.recipient,
            "status": self.status,
            "answer": self.answer,
            "attempts": self.attempts,
            "codes_returned": self.codes_returned,
            "updated_at": iso_seconds(self.updated_at),
        }


def list_deliveries(
    engine: Engine, mailing_id: str, *, status: str | None = None, limit: int | None = None
) -> list[DeliveryView]:
    """The mailing's messages with a delivery state, by recipient; raises MailingNotFound."""
    if status is not None and status not in set(DeliveryStatus):
        allowed = ", ".join(s.value for s in DeliveryStatus)
        raise InvalidSetting(f"must be one of {allowed}, not {status!r}", "status")
    if limit is not None and limit < 1:
        raise InvalidSetting("must be at least 1", "limit")
    with read_transaction(engine) as conn:
        if not conn.execute(select(exists().where(Mailing.id == mailing_id))).scalar():
            raise unknown_mailing(conn, mailing_id)
        query = (
            select(Delivery)
            .where(Delivery.mailing_id == mailing_id)
            .order_by(Delivery.recipient_id, Delivery.ref)
        )
        if status is not None:
            query = query.where(Delivery.status == status)
        if limit is not None:
            query = query.limit(limit)
        return [
            DeliveryView(
                row.ref,
                row.recipient_id,
                row.status,
                row.answer,
                row.attempts,
                row.codes_returned,
                row.updated_at,
            )
            for row in conn.execute(query)
        ]


@dataclass(frozen=True)
class DeliveryCounts:
    """A mailing's messages by delivery state (``mailing show``/``mailings``)."""

    #: Messages a relay or service accepted, those later delivered or bounced included.
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    #: Refused by the relay (5xx).
    failed: int = 0
    deferred: int = 0
    #: Codes given back because their message failed or bounced.
    codes_returned: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def delivery_counts(conn: Connection, mailing_id: str) -> DeliveryCounts:
    """Count the mailing's messages by state, in one statement over its deliveries."""
    count = _count
    row = conn.execute(
        select(
            count(Delivery.accepted.is_(True)),
            count(Delivery.status == DeliveryStatus.DELIVERED),
            count(Delivery.status == DeliveryStatus.BOUNCED),
            count(Delivery.status == DeliveryStatus.FAILED),
            count(Delivery.status == DeliveryStatus.DEFERRED),
            func.coalesce(func.sum(Delivery.codes_returned), 0),
        ).where(Delivery.mailing_id == mailing_id)
    ).one()
    return DeliveryCounts(*(int(value) for value in row))
