"""A batch of delivery events applied to the store: the loop every front end shares.

A webhook request comes to a batch of events (``delivery.EventBatch``);
this applies it (:func:`pools.after_sending.deliveries.apply_events`, each
event with the effect it has alone, up to :data:`EVENTS_PER_TRANSACTION` in
one transaction) and counts the outcomes. A batch that carries a one-time token (Mailgun) is refused as a
replay, before any of its events is applied, when the token was seen
before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine

from pools.after_sending.deliveries import (
    Event,
    EventFacts,
    EventKind,
    EventOutcome,
    apply_events,
    forget_token,
    seen_token,
)
from pools.errors import ReplayedRequest
from pools.store.clock import to_utc_naive

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
        return {"applied": self.applied, "duplicates": self.duplicates, "unmatched": self.unmatched}

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
        if not seen_token(engine, provider, token, now=moment, window=window):
            raise ReplayedRequest(provider, "signature.token was seen before (a replayed request)")
    try:
        return _apply_each(engine, batch, moment)
    except BaseException:
        if token is not None:
            # The store is failing already: its first error is the one to report.
            with contextlib.suppress(Exception):
                forget_token(engine, provider, token)
        raise


def _apply_each(engine: Engine, batch: EventBatchFacts, moment: datetime) -> Applied:
    done = Applied()
    known = [event for event in batch if event.ref is not None]
    done.unmatched += len(batch) - len(known)
    for start in range(0, len(known), EVENTS_PER_TRANSACTION):
        chunk = known[start : start + EVENTS_PER_TRANSACTION]
        outcomes = apply_events(
            engine,
            [
                Event(e.provider, e.event_id, e.ref or "", _kind(e), e.permanent, e.at, e.detail)
                for e in chunk
            ],
            now=moment,
        )
        for outcome in outcomes:
            done.count(outcome)
    return done


def _kind(event: EventFacts) -> EventKind:
    return str(event.type)  # type: ignore[return-value]  # apply_events checks it
