"""What a send run records of each message, and what it reports when it ends."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from promomail.pools.errors import PromomailError


class SendState(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"


class SendLog(Protocol):
    """Where a run records what happened to each message, and learns what is left.

    Called from the sending threads, possibly at once: an implementation must
    be thread-safe (the store's opens a transaction per call).
    """

    def to_send(self, refs: Sequence[str]) -> set[str]:
        """Which of ``refs`` still need sending: not ``sent``, ``failed`` or anything later.

        A message marked ``sending`` and never recorded (the run died in its
        ``DATA``) needs sending again: the relay may never have seen it.
        """

    def sending(self, ref: str) -> None:
        """The message is about to be handed over (``DATA``)."""

    def record(self, ref: str, recipient: str, state: SendState, answer: str) -> int:
        """The relay's ``answer`` put ``recipient``'s message ``ref`` in ``state``; the
        codes given back (if failed).

        A ``sent`` may be made durable after this returns (the store's log
        commits them in groups, a bounded number behind): :meth:`flush`
        waits for it.
        """

    def flush(self) -> None:
        """Wait until every answer recorded so far is durable."""


class SendAborted(PromomailError):
    """The run stopped: the relay refused something about the run itself, not a recipient."""


class MemoryLog:
    """A :class:`SendLog` in memory, for tests and benchmarks; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.states: dict[str, tuple[SendState, str]] = {}
        self.in_flight: set[str] = set()
        #: Every call, in order: ("sending", ref, "") or (state, ref, answer).
        self.events: list[tuple[str, str, str]] = []

    def to_send(self, refs: Sequence[str]) -> set[str]:
        with self._lock:
            return {
                ref
                for ref in refs
                if self.states.get(ref, (SendState.DEFERRED, ""))[0] is SendState.DEFERRED
            }

    def sending(self, ref: str) -> None:
        with self._lock:
            self.in_flight.add(ref)
            self.events.append(("sending", ref, ""))

    def record(self, ref: str, recipient: str, state: SendState, answer: str) -> int:
        with self._lock:
            self.in_flight.discard(ref)
            self.states[ref] = (state, answer)
            self.events.append((str(state), ref, answer))
        return 0

    def flush(self) -> None:
        """Every answer is recorded as it is given."""


@dataclass(frozen=True)
class Outcome:
    """What one message's run ended with, as the progress callback sees it."""

    ref: str
    recipient: str
    #: A :class:`SendState`, or "skipped" (not sent: no address, or not buildable).
    state: str
    answer: str
    attempts: int


@dataclass(frozen=True)
class SendSummary:
    sent: int
    deferred: int
    failed: int
    #: Messages not sent because they have no ``to`` (or cannot be built), with why.
    skipped: int
    #: Messages the log said were done already (an earlier run sent or failed them).
    already: int
    codes_returned: int
    seconds: float
    skipped_messages: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def rate(self) -> float:
        """Messages the relay accepted per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Nothing this run handled was left deferred or failed."""
        return self.deferred == 0 and self.failed == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "deferred": self.deferred,
            "failed": self.failed,
            "skipped": self.skipped,
            "already": self.already,
            "codes_returned": self.codes_returned,
            "seconds": round(self.seconds, 3),
            "messages_per_second": round(self.rate, 1),
            "skipped_messages": [
                {"recipient": recipient, "reason": reason}
                for recipient, reason in self.skipped_messages
            ],
        }
