"""A batch of delivery events applied to the store: the loop every front end shares.

A webhook request comes to a batch of events (``delivery.EventBatch``);
this applies it (:func:`pools.after_sending.delivery_events.apply_events`, each
event with the effect it has alone, up to :data:`EVENTS_PER_TRANSACTION` in
one transaction) and counts the outcomes. A batch that carries a one-time
token (Mailgun) is refused as a replay, before any of its events is
applied, when the token was seen before.

Most services post one event per request (SNS, Mailgun, Postmark), many at
once. An :class:`EventApplier` shared by the requests of a server lets them
share transactions (group commit): while one transaction is under way, the
events of the requests that arrive queue, and the next request to go
applies all of them in one. Each request is answered once its own events
are committed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine

from promomail.pools.after_sending.delivery_events import (
    Event,
    EventFacts,
    EventKind,
    EventOutcome,
    apply_events,
    check_events,
    forget_token,
    seen_token,
)
from promomail.pools.documents import document
from promomail.pools.errors import ReplayedRequest
from promomail.pools.store.clock import to_utc_naive

#: How long a one-time token is remembered. A request may be signed up to five
#: minutes ahead of this server's clock and is refused as stale five minutes
#: after it was signed: a token older than ten minutes can only come with a
#: timestamp that is refused anyway.
TOKEN_MEMORY = timedelta(minutes=10)
#: Events applied in one transaction: one commit for many is what makes a
#: webhook of many events cheap; a bound keeps SQLite's single writer (and
#: the rows a transaction locks) from being held for long.
EVENTS_PER_TRANSACTION = 100


@dataclass
class Applied:
    """What became of a batch's events (``POST /api/v1/events/…`` answers it)."""

    applied: int = 0
    #: The service's event id was applied before: nothing changed.
    duplicates: int = 0
    #: No message of this store carries the event's reference (or it has none).
    unmatched: int = 0

    def as_dict(self) -> dict[str, Any]:
        return document(self)

    def count(self, outcome: EventOutcome) -> None:
        """One more event with this outcome."""
        if outcome == "applied":
            self.applied += 1
        elif outcome == "duplicate":
            self.duplicates += 1
        else:
            self.unmatched += 1


class EventBatchFacts(Protocol):
    """The events of one request (``delivery.EventBatch``) and its one-time token, if any."""

    @property
    def replay_token(self) -> str | None: ...
    @property
    def replay_expires(self) -> datetime | None: ...
    def __iter__(self) -> Iterator[EventFacts]: ...
    def __len__(self) -> int: ...


def apply_event_batch(
    engine: Engine, provider: str, batch: EventBatchFacts, *, now: datetime
) -> Applied:
    """Apply every event of ``provider``'s ``batch``; raises :class:`ReplayedRequest`
    when its one-time ``replay_token`` was seen before, before anything is applied.

    :meth:`EventApplier.apply` on an applier of its own: nothing to share.
    """
    return EventApplier(engine).apply(provider, batch, now=now)


@dataclass
class _Waiting:
    """One request's events, queued for the transaction that applies them."""

    events: list[Event]
    outcomes: list[EventOutcome] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None


class EventApplier:
    """Applies the event batches of concurrent requests, sharing transactions.

    Safe to call from many threads at once; each call returns when its own
    events are committed. The events of one transaction are applied by
    reference (:func:`apply_events`), each with the effect it has alone, so
    sharing changes no outcome; a transaction that fails fails every request
    in it (a service sends each again).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        #: Held by the request applying the queued events.
        self._applying = threading.Lock()
        self._queued: list[_Waiting] = []

    def apply(self, provider: str, batch: EventBatchFacts, *, now: datetime) -> Applied:
        """Apply every event of ``provider``'s ``batch``; raises :class:`ReplayedRequest`
        when its one-time ``replay_token`` was seen before, before anything is applied.

        A token is recorded before the events are applied, so two copies of one
        request racing each other apply it once; if applying then fails, the
        token is forgotten again, so the service's retry is not taken for a
        replay (the events' ids make whatever was applied change nothing twice).
        """
        moment = to_utc_naive(now)
        token = batch.replay_token
        if token is not None:
            window = TOKEN_MEMORY
            if batch.replay_expires is not None:
                window = max(window, to_utc_naive(batch.replay_expires) - moment)
            if not seen_token(self.engine, provider, token, now=moment, window=window):
                raise ReplayedRequest(
                    provider, "signature.token was seen before (a replayed request)"
                )
        try:
            return self._apply_each(batch, moment)
        except BaseException:
            if token is not None:
                # The store is failing already: its first error is the one to report.
                with contextlib.suppress(Exception):
                    forget_token(self.engine, provider, token)
            raise

    def _apply_each(self, batch: EventBatchFacts, moment: datetime) -> Applied:
        done = Applied()
        known = [event for event in batch if event.ref is not None]
        done.unmatched += len(batch) - len(known)
        for start in range(0, len(known), EVENTS_PER_TRANSACTION):
            chunk = known[start : start + EVENTS_PER_TRANSACTION]
            events = [
                Event(e.provider, e.event_id, e.ref or "", _kind(e), e.permanent, e.at, e.detail)
                for e in chunk
            ]
            check_events(events)  # a bad request fails alone, not the ones it would share with
            for outcome in self._apply_shared(events, moment):
                done.count(outcome)
        return done

    def _apply_shared(self, events: list[Event], moment: datetime) -> list[EventOutcome]:
        """The outcomes of ``events``, applied in a transaction shared with the
        events other requests queued meanwhile (first come, first applied)."""
        mine = _Waiting(events)
        with self._lock:
            self._queued.append(mine)
        while True:
            with self._applying:
                if mine.done:
                    break
                with self._lock:
                    taken = _first(self._queued, EVENTS_PER_TRANSACTION)
                    del self._queued[: len(taken)]
                _apply_together(self.engine, taken, moment)
        if mine.error is not None:
            raise mine.error
        return mine.outcomes


def _first(queued: list[_Waiting], most: int) -> list[_Waiting]:
    """The first of ``queued`` (at least one) whose events number ``most`` at most."""
    taken: list[_Waiting] = []
    count = 0
    for waiting in queued:
        if taken and count + len(waiting.events) > most:
            break
        taken.append(waiting)
        count += len(waiting.events)
    return taken


def _apply_together(engine: Engine, taken: list[_Waiting], moment: datetime) -> None:
    """Apply the events of ``taken`` in one transaction, each request given its outcomes."""
    try:
        outcomes = apply_events(engine, [e for w in taken for e in w.events], now=moment)
    except BaseException as exc:
        for waiting in taken:
            waiting.error = exc
    else:
        start = 0
        for waiting in taken:
            waiting.outcomes = outcomes[start : start + len(waiting.events)]
            start += len(waiting.events)
    finally:
        for waiting in taken:
            waiting.done = True


def _kind(event: EventFacts) -> EventKind:
    return str(event.type)  # type: ignore[return-value]  # apply_events checks it
