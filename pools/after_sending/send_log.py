"""The store's side of one ``send`` run: what is left to send, and each answer recorded.

The relay's 250s are committed by a thread of their own, many to a
transaction, while the sessions go on to their next messages: a commit per
message before the next would make the store, not the relay, set the pace.
What that costs is bounded: at most :data:`UNCOMMITTED_MAX` accepted
messages wait for their commit at any moment (a session that would exceed
it waits), so a ``kill -9`` sends again at most those and the messages that
were in ``DATA`` when it died. A 4xx or 5xx is recorded at once, in the
session's own transaction (a 5xx gives the message's codes back there).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable
from contextlib import suppress
from types import TracebackType

from sqlalchemy import Engine

from promomail.pools.after_sending.deliveries import record_send, record_sent, to_send

#: Messages the relay accepted whose answer is not yet committed, at most.
#: Big enough that the commits keep up with the sessions at any relay speed
#: (a commit takes a few of them at once), small enough to be the whole
#: price of a crash.
UNCOMMITTED_MAX = 32

#: How long the committer lets answers gather before it commits fewer than
#: half a window: a commit costs a few hundred microseconds of CPU whatever
#: its size, so one per answer would cost the sender more than its relay.
GATHER_SECONDS = 0.05


class DeliveryLog:
    """The sender's ``SendLog`` (:class:`delivery.sending.SendLog`) on the store.

    Safe to call from the sender's threads at once.
    Use it as a context manager, or call :meth:`close`: leaving commits
    every answer still waiting.

    ``check`` (when given) is called before a message is handed over and
    raises to stop the run: the run's lease was taken over by another one.
    """

    def __init__(
        self,
        engine: Engine,
        mailing_id: str,
        *,
        check: Callable[[], None] | None = None,
        window: int = UNCOMMITTED_MAX,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.engine = engine
        self.mailing_id = mailing_id
        self.check = check
        self.window = window
        #: Codes given back by this run (messages the relay refused).
        self.codes_returned = 0
        self._changed = threading.Condition()
        #: Accepted, waiting for the committer: ref -> (recipient, answer).
        self._waiting: dict[str, tuple[str, str]] = {}
        #: Accepted, in the commit under way.
        self._committing: dict[str, tuple[str, str]] = {}
        self._failure: BaseException | None = None
        self._closing = False
        #: Callers of :meth:`flush` waiting: the committer stops gathering.
        self._flushing = 0
        #: When the oldest answer in ``_waiting`` was queued (monotonic).
        self._oldest = 0.0
        self._committer: threading.Thread | None = None

    # -- the SendLog --------------------------------------------------------------

    def to_send(self, refs: Iterable[str]) -> set[str]:
        if self.check is not None:
            self.check()
        wanted = set(to_send(self.engine, self.mailing_id, refs))
        with self._changed:
            return wanted - self._waiting.keys() - self._committing.keys()

    def settled_before(self, refs: Collection[str]) -> int:
        """How many of ``refs`` earlier runs settled (the sender skips them)."""
        return len(refs) - len(to_send(self.engine, self.mailing_id, refs))

    def sending(self, ref: str) -> None:
        """Nothing to write: a message never recorded is sent again by the next
        run anyway, so marking it first would cost a transaction per message."""
        if self.check is not None:
            self.check()

    def record(self, ref: str, recipient: str, state: str, answer: str) -> int:
        """Record the relay's answer (``state`` is a ``SendState``); the codes given back.

        A 250 is queued for the committer (waiting while :attr:`window`
        answers are uncommitted already); anything else is written before
        this returns.
        """
        if state == "sent":
            self._queue(ref, recipient, answer)
            return 0
        self._raise_failure()
        returned = record_send(
            self.engine,
            mailing_id=self.mailing_id,
            recipient_id=recipient,
            ref=ref,
            state=state,  # type: ignore[arg-type]  # checked by record_send
            answer=answer,
        )
        with self._changed:
            self.codes_returned += returned
        return returned

    def flush(self) -> None:
        """Wait until every answer recorded so far is committed."""
        with self._changed:
            self._flushing += 1
            self._changed.notify_all()
            try:
                while (self._waiting or self._committing) and self._failure is None:
                    self._changed.wait()
            finally:
                self._flushing -= 1
        self._raise_failure()

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Commit what waits, stop the committer; raises what a commit raised."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            committer = self._committer
        if committer is not None:
            committer.join()
        self._raise_failure()

    def __enter__(self) -> DeliveryLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
            return
        with suppress(Exception):  # the run's own error is the one to report
            self.close()

    # -- the committer --------------------------------------------------------------

    def _queue(self, ref: str, recipient: str, answer: str) -> None:
        entry = (recipient, answer)
        with self._changed:
            while (
                len(self._waiting) + len(self._committing) >= self.window and self._failure is None
            ):
                self._changed.wait()
            self._raise_failure_locked()
            if self._closing:
                raise RuntimeError("the send log is closed")
            first = not self._waiting
            if first:
                self._oldest = time.monotonic()
            self._waiting[ref] = entry
            if self._committer is None:
                self._committer = threading.Thread(
                    target=self._commit_until_closed, name="promomail-send-log", daemon=True
                )
                self._committer.start()
            # Wake the committer only when it has something new to do (start
            # timing a gathering, or commit one): a wake-up per answer would
            # cost the sessions a thread switch each.
            if first or self._gathered():
                self._changed.notify_all()

    def _gathered(self) -> bool:
        """Whether the answers waiting should be committed now (lock held)."""
        if not self._waiting:
            return False
        if self._closing or self._flushing or len(self._waiting) * 2 >= self.window:
            return True
        return time.monotonic() - self._oldest >= GATHER_SECONDS

    def _commit_until_closed(self) -> None:
        while True:
            with self._changed:
                while not self._gathered() and not (self._closing and not self._waiting):
                    # With answers waiting, wake to commit them when they have
                    # waited long enough even if no other answer comes.
                    self._changed.wait(GATHER_SECONDS if self._waiting else None)
                if not self._waiting:
                    return
                self._committing, self._waiting = self._waiting, {}
                batch = [(ref, *entry) for ref, entry in self._committing.items()]
            try:
                record_sent(self.engine, self.mailing_id, batch)
            except BaseException as exc:
                with self._changed:
                    self._failure = exc
                    self._committing = {}
                    self._changed.notify_all()
                return
            with self._changed:
                self._committing = {}
                self._changed.notify_all()

    def _raise_failure(self) -> None:
        with self._changed:
            self._raise_failure_locked()

    def _raise_failure_locked(self) -> None:
        if self._failure is not None:
            raise self._failure


__all__ = ["GATHER_SECONDS", "UNCOMMITTED_MAX", "DeliveryLog"]
