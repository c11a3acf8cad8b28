"""The mail services' events applied to the store, many in one transaction.

An event names its message by reference; how it moves the message (and
when its codes go back) is :mod:`pools.after_sending.deliveries`' rules.
A batch costs a fixed number of statements whatever its size: the messages
are read (and locked, in reference order) in one, the events recorded in
one, every move written in one ``UPDATE … FROM`` a row set, and the codes of the
messages that bounced given back together. One webhook request of many
events, or many requests sharing a transaction
(:mod:`pools.after_sending.event_batches`), pays for a handful of round
trips, not a handful per event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, Engine, String, bindparam, delete, select, update

from promomail.pools.after_sending.deliveries import (
    ANSWER_MAX,
    OPEN_STATES,
    give_back,
    insert_if_new,
    insert_statement,
)
from promomail.pools.choices import DeliveryStatus
from promomail.pools.errors import InvalidSetting
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import write_transaction
from promomail.pools.store.models import Delivery, DeliveryEvent, Issuance, WebhookToken
from promomail.pools.store.row_sets import RowSet, one_of, per_dialect

EventKind = Literal["delivered", "bounce", "dropped", "complaint", "deferred"]
EventOutcome = Literal["applied", "duplicate", "unmatched"]
EVENT_KINDS: tuple[str, ...] = ("delivered", "bounce", "dropped", "complaint", "deferred")


@dataclass(frozen=True)
class Event:
    """One delivery event as the store takes it (see :func:`apply_event`)."""

    provider: str
    event_id: str
    ref: str
    kind: EventKind
    permanent: bool
    at: datetime | None
    detail: str

    @property
    def target(self) -> DeliveryStatus:
        """The state this event moves a message still open into."""
        if self.kind in ("delivered", "complaint"):
            return DeliveryStatus.DELIVERED
        if self.kind in ("bounce", "dropped") and self.permanent:
            return DeliveryStatus.BOUNCED
        return DeliveryStatus.DEFERRED

    @property
    def answer(self) -> str:
        return self.detail[:ANSWER_MAX]


def apply_event(
    engine: Engine,
    *,
    provider: str,
    event_id: str,
    ref: str,
    kind: EventKind,
    permanent: bool,
    at: datetime | None,
    detail: str,
    now: datetime | None = None,
) -> EventOutcome:
    """Apply one delivery event, in one transaction.

    ``duplicate``: this provider's event ``event_id`` was applied before, and
    nothing changes. ``unmatched``: no message of this store has ``ref``
    (another system's message, or one whose issuances predate references);
    nothing is recorded, so the same event applies if it comes again once
    the reference is known. ``at`` is when the service saw it happen.
    """
    event = Event(provider, event_id, ref, kind, permanent, at, detail)
    return apply_events(engine, [event], now=now)[0]


def apply_events(
    engine: Engine, events: Sequence[Event], *, now: datetime | None = None
) -> list[EventOutcome]:
    """Apply several events in one transaction; their outcomes, in their order.

    Each event has the effect :func:`apply_event` gives it alone: events
    about one message apply in the order given. The messages are locked in
    reference order, so two transactions applying overlapping batches never
    deadlock each other.
    """
    check_events(events)
    moment = now or utcnow()
    outcomes: list[EventOutcome] = ["unmatched"] * len(events)
    with write_transaction(engine) as conn:
        for indexes in _rounds(events):
            _apply_round(conn, [events[n] for n in indexes], moment, indexes, outcomes)
    return outcomes


def check_events(events: Iterable[Event]) -> None:
    """Raise :class:`InvalidSetting` for an event of a kind the store does not know."""
    for event in events:
        if event.kind not in EVENT_KINDS:
            raise InvalidSetting(
                f"must be one of {', '.join(EVENT_KINDS)}, not {event.kind!r}", "kind"
            )


class EventFacts(Protocol):
    """One service's word about one message, as :mod:`delivery` reads it
    (``delivery.DeliveryEvent``); ``ref`` is None when it names no message."""

    @property
    def provider(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def ref(self) -> str | None: ...
    @property
    def type(self) -> str: ...
    @property
    def permanent(self) -> bool: ...
    @property
    def at(self) -> datetime | None: ...
    @property
    def detail(self) -> str: ...


def apply_delivery_event(engine: Engine, event: EventFacts) -> EventOutcome:
    """:func:`apply_event` for an event read from a webhook or a file; one transaction."""
    if event.ref is None:
        return "unmatched"
    kind: EventKind = str(event.type)  # type: ignore[assignment]  # checked by apply_events
    facts = Event(
        event.provider, event.event_id, event.ref, kind, event.permanent, event.at, event.detail
    )
    return apply_events(engine, [facts])[0]


# ---------------------------------------------------------------------------
# One round: at most one event per message
# ---------------------------------------------------------------------------


def _rounds(events: Sequence[Event]) -> list[list[int]]:
    """The events' positions in rounds: round k holds each message's k-th event,
    in reference order. Rounds apply one after the other, so a message's
    events apply in the order given, and within a round no two touch one
    message."""
    rounds: list[list[int]] = []
    seen: Counter[str] = Counter()
    for n, event in enumerate(events):
        k = seen[event.ref]
        seen[event.ref] += 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(n)
    for indexes in rounds:
        indexes.sort(key=lambda n: events[n].ref)
    return rounds


@dataclass
class _Message:
    mailing_id: str
    recipient_id: str
    #: None: no delivery row yet (a message sent by other means).
    status: str | None


def _apply_round(
    conn: Connection,
    events: list[Event],
    moment: datetime,
    positions: list[int],
    outcomes: list[EventOutcome],
) -> None:
    messages = _messages(conn, [event.ref for event in events])
    recorded = _record(conn, [event for event in events if event.ref in messages], moment)
    applying: list[Event] = []
    for event, position in zip(events, positions, strict=True):
        if event.ref not in messages:
            continue
        key = (event.provider, event.event_id)
        if key in recorded:
            recorded.discard(key)  # the first event of a key in the batch is the one applied
            applying.append(event)
            outcomes[position] = "applied"
        else:
            outcomes[position] = "duplicate"
    _add_missing_rows(conn, messages, [event.ref for event in applying], moment)
    moves: list[tuple[str, str, str]] = []
    answers: list[tuple[str, str]] = []
    bounced: dict[str, str] = {}
    for event in applying:
        if messages[event.ref].status in OPEN_STATES:
            moves.append((event.ref, str(event.target), event.answer))
            if event.target is DeliveryStatus.BOUNCED:
                text = event.answer
                reason = f"{event.provider} {event.kind}"
                bounced[event.ref] = f"{reason}: {text}" if text else reason
        else:
            # Recorded, nothing more: the message's fate was settled before.
            answers.append((event.ref, event.answer))
    if moves:
        conn.execute(_event_move(conn), {"now": moment, **_MOVES.bind(conn, moves)})
    if answers:
        conn.execute(_event_record(conn), {"now": moment, **_ANSWERS.bind(conn, answers)})
    give_back(conn, bounced, moment)


def _messages(conn: Connection, refs: list[str]) -> dict[str, _Message]:
    """The messages of this store among ``refs``: their delivery rows, locked in
    reference order, or (for a message with none) what its issuances say."""
    found = {
        ref: _Message(mailing_id, recipient_id, status)
        for ref, mailing_id, recipient_id, status in conn.execute(
            select(Delivery.ref, Delivery.mailing_id, Delivery.recipient_id, Delivery.status)
            .where(one_of(conn, Delivery.ref, refs))
            .order_by(Delivery.ref)
            .with_for_update()
        )
    }
    missing = [ref for ref in refs if ref not in found]
    if missing:
        issued = conn.execute(
            select(Issuance.ref, Issuance.mailing_id, Issuance.customer_id)
            .where(one_of(conn, Issuance.ref, missing))
            .distinct()
        )
        for ref, mailing_id, customer_id in issued:
            if ref is not None:  # always, by the WHERE clause; the column itself is nullable
                found.setdefault(ref, _Message(mailing_id, customer_id, None))
    return found


def _record(conn: Connection, events: list[Event], moment: datetime) -> set[tuple[str, str]]:
    """Record the events; the (provider, event id) of those never recorded before."""
    if not events:
        return set()
    rows = [
        {
            "provider": event.provider,
            "event_id": event.event_id,
            "ref": event.ref,
            "type": event.kind,
            "occurred_at": event.at,
            "received_at": moment,
        }
        for event in events
    ]
    statement = insert_statement(conn, DeliveryEvent.__table__)
    return {(provider, event_id) for provider, event_id in conn.execute(statement, rows)}


def _add_missing_rows(
    conn: Connection, messages: dict[str, _Message], refs: list[str], moment: datetime
) -> None:
    """A delivery row for each message sent by other means (an event means a
    service had it), all in one statement. A row another transaction made
    meanwhile is read (and locked) instead."""
    missing = [ref for ref in refs if messages[ref].status is None]
    if not missing:
        return
    rows = [
        {
            "ref": ref,
            "mailing_id": messages[ref].mailing_id,
            "recipient_id": messages[ref].recipient_id,
            "status": str(DeliveryStatus.SENT),
            "answer": None,
            "attempts": 0,
            "accepted": True,
            "updated_at": moment,
            "codes_returned": 0,
        }
        for ref in missing
    ]
    added = set(conn.execute(insert_statement(conn, Delivery.__table__), rows).scalars())
    for ref in missing:
        if ref in added:
            messages[ref].status = str(DeliveryStatus.SENT)
        else:
            messages[ref].status = conn.execute(
                select(Delivery.status).where(Delivery.ref == ref).with_for_update()
            ).scalar_one()


# The statements of a round, built once per dialect: building a statement
# costs more than running it. A move needs no condition on the state: the
# round holds its messages' rows (PostgreSQL's FOR UPDATE, SQLite's one
# writer) from reading their state to writing the new one.

#: Messages moved into a new state: reference, state, the service's answer.
_MOVES = RowSet("moves", ref=String(), status=String(), answer=String())
#: Messages whose fate was settled before: reference, the service's answer.
_ANSWERS = RowSet("answers", ref=String(), answer=String())


@per_dialect
def _event_move(postgres: bool) -> Any:
    moves = _MOVES.table(postgres)
    return (
        update(Delivery)
        .where(Delivery.ref == moves.c.ref)
        .values(
            status=moves.c.status,
            answer=moves.c.answer,
            updated_at=bindparam("now"),
            accepted=True,
        )
    )


@per_dialect
def _event_record(postgres: bool) -> Any:
    answers = _ANSWERS.table(postgres)
    return (
        update(Delivery)
        .where(Delivery.ref == answers.c.ref)
        .values(answer=answers.c.answer, updated_at=bindparam("now"))
    )


# ---------------------------------------------------------------------------
# Webhooks' one-time tokens
# ---------------------------------------------------------------------------


def seen_token(
    engine: Engine, provider: str, token: str, *, now: datetime, window: timedelta
) -> bool:
    """Record a webhook's one-time token; False when it was seen within ``window`` (a replay).

    Tokens older than ``window`` are forgotten here: a request that old is
    refused by its timestamp anyway.
    """
    with write_transaction(engine) as conn:
        conn.execute(
            delete(WebhookToken).where(
                WebhookToken.provider == provider, WebhookToken.seen_at < now - window
            )
        )
        return insert_if_new(
            conn, WebhookToken.__table__, {"provider": provider, "token": token, "seen_at": now}
        )


def forget_token(engine: Engine, provider: str, token: str) -> None:
    """Forget a token recorded by :func:`seen_token` whose request then failed,
    so the service's retry of that request is not taken for a replay."""
    with write_transaction(engine) as conn:
        conn.execute(
            delete(WebhookToken).where(
                WebhookToken.provider == provider, WebhookToken.token == token
            )
        )


__all__ = [
    "EVENT_KINDS",
    "Event",
    "EventFacts",
    "EventKind",
    "EventOutcome",
    "apply_delivery_event",
    "apply_event",
    "apply_events",
    "check_events",
    "forget_token",
    "seen_token",
]
