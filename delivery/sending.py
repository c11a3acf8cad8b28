"""Sending rendered messages through an SMTP relay, each message's state recorded as it goes.

The client is the standard library's ``smtplib``, one thread per SMTP
session: a run holds a handful of sessions (``connections``), the relay's
round trips dominate, and a blocking socket releases the GIL while it
waits. The state of each message goes to a :class:`SendLog`, which the
store implements with ordinary blocking transactions; with ``aiosmtplib``
every one of those would have to be pushed to a thread pool anyway, and the
package would be one more dependency for no gain at this number of sessions.

Exactly once, as far as SMTP allows: a message's answer is handed to the
log as soon as the relay gives it, and a run sends only what the log says
still needs sending. After a crash, what goes out again is what the log
had not made durable: the messages in ``DATA`` at that instant, and the
accepted ones whose answers were still on their way to the store (the
store's log keeps those few: :mod:`pools.after_sending.send_log`).

Per message, by the relay's answer:

* 2xx after ``DATA``: ``sent``.
* 4xx, or a connection that dropped: ``deferred``, and tried again in this
  run after a backoff, for at most ``retry_for`` seconds from its first
  deferral; then left ``deferred`` for a later run.
* 5xx to ``RCPT`` or after ``DATA``: ``failed`` with the relay's answer (the
  log returns the message's codes).
* 5xx to ``MAIL FROM``, or 530 (authentication required) anywhere, is about
  the run, not the recipient: the run stops and nothing more is recorded.
"""

from __future__ import annotations

import heapq
import itertools
import random
import re
import smtplib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from delivery.outgoing import OutgoingMessage
from pools.errors import InvalidSetting, PromomailError
from pools.relay import SmtpRelay, tls_context

#: Refs asked of the log at once: one store query per this many messages.
BATCH = 256
#: A session idle this long is checked with NOOP before it is used again.
IDLE_CHECK_S = 20.0
MAX_BACKOFF_S = 30.0


#: How long deferred messages may be retried within one run, at most (a day).
MAX_RETRY_FOR_S = 86_400.0
_DURATION = re.compile(r"([0-9]{1,6})(s|m|h)?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m`` or ``1h``: whole seconds, minutes or hours, at most a day."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidSetting(f"{text!r} is not a duration (e.g. 90s, 15m, 1h)")
    seconds = float(int(match[1]) * _UNIT_SECONDS[match[2] or "s"])
    if seconds > MAX_RETRY_FOR_S:
        raise InvalidSetting(f"{text!r} is longer than a day")
    return seconds


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


@dataclass
class _Item:
    message: OutgoingMessage
    payload: bytes | None = None
    #: The envelope recipient, worked out once.
    to: str | None = None
    attempts: int = 0
    #: When the retries of a deferred message end (monotonic), set at its first deferral.
    deadline: float | None = None


class _Pace:
    """At most ``rate`` messages a second overall, spaced ``1/rate`` apart: no bursts."""

    def __init__(self, rate: float) -> None:
        self._gap = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._gap
        if slot > now:
            time.sleep(slot - now)


class _Work:
    """The messages waiting for a session: the next batch of the output, and deferred
    ones due later.

    There is no reader thread: the session that finds nothing ready reads the
    next batch itself (outside the lock, the others going on meanwhile). A
    thread building messages ahead would hold the GIL in bursts while the
    sessions, woken by the relay's answers, wait for it.
    """

    def __init__(self, refill: Callable[[], list[_Item] | None]) -> None:
        self.lock = threading.Lock()
        self.items = threading.Condition(self.lock)
        self.ready: deque[_Item] = deque()
        self.later: list[tuple[float, int, _Item]] = []
        self._refill = refill
        self._order = itertools.count()
        self.busy = 0
        self.feeding = True
        self.refilling = False
        self.stop: BaseException | None = None

    def retry_at(self, due: float, item: _Item) -> None:
        with self.lock:
            heapq.heappush(self.later, (due, next(self._order), item))
            # A session asleep until a later due time must look again.
            self.items.notify_all()

    def take(self) -> _Item | None:
        with self.lock:
            while self.stop is None:
                now = time.monotonic()
                if self.later and self.later[0][0] <= now:
                    item = heapq.heappop(self.later)[2]
                elif self.ready:
                    item = self.ready.popleft()
                elif self.feeding and not self.refilling:
                    self._read_more()
                    continue
                elif not self.feeding and not self.busy and not self.later:
                    self.items.notify_all()
                    return None
                else:
                    self.items.wait(self.later[0][0] - now if self.later else None)
                    continue
                self.busy += 1
                return item
            return None

    def _read_more(self) -> None:
        """Read the next batch, the lock released meanwhile (held on entry and exit)."""
        self.refilling = True
        self.lock.release()
        try:
            batch = self._refill()
        except BaseException as exc:
            batch = None
            failure: BaseException | None = exc
        else:
            failure = None
        finally:
            self.lock.acquire()
            self.refilling = False
        if failure is not None and self.stop is None:
            self.stop = failure
        if batch is None:
            self.feeding = False
        else:
            self.ready.extend(batch)
        self.items.notify_all()

    def done(self) -> None:
        with self.lock:
            self.busy -= 1
            if not self.busy and not self.feeding:
                self.items.notify_all()  # the end may have come

    def abort(self, error: BaseException) -> None:
        with self.lock:
            if self.stop is None:
                self.stop = error
            self.items.notify_all()


class _Dropped(Exception):
    """The session is gone (closed, reset, timed out, 421): the message is deferred."""


def _text(answer: bytes | str) -> str:
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else answer
    return " ".join(text.split())


class _Run:
    def __init__(
        self,
        messages: Iterable[OutgoingMessage],
        relay: SmtpRelay,
        log: SendLog,
        *,
        context: ssl.SSLContext,
        connections: int,
        rate: float | None,
        retry_for: float,
        backoff: float,
        timeout: float,
        progress: Callable[[Outcome], None] | None,
    ) -> None:
        self.relay = relay
        self.log = log
        self.context = context
        self.connections = connections
        self.pace = _Pace(rate) if rate is not None else None
        self.retry_for = retry_for
        self.backoff = backoff
        self.timeout = timeout
        self.progress = progress
        self.messages = iter(messages)
        self.work = _Work(self.next_batch)
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(("sent", "deferred", "failed", "skipped", "already"), 0)
        self.codes_returned = 0
        self.skipped: list[tuple[str, str]] = []

    # -- outcomes -------------------------------------------------------------

    def _finish(self, item: _Item, state: str, answer: str) -> None:
        with self.lock:
            self.counts[state] += 1
            if state == "skipped":
                self.skipped.append((item.message.recipient, answer))
            if self.progress is not None:
                message = item.message
                self.progress(Outcome(message.ref, message.recipient, state, answer, item.attempts))

    def _record(self, item: _Item, state: SendState, answer: str) -> None:
        returned = self.log.record(item.message.ref, item.message.recipient, state, answer)
        if returned:
            with self.lock:
                self.codes_returned += returned
        if state is not SendState.DEFERRED:
            self._finish(item, str(state), answer)
            return
        now = time.monotonic()
        if item.deadline is None:
            item.deadline = now + self.retry_for
        delay = min(self.backoff * 2 ** (item.attempts - 1), MAX_BACKOFF_S)
        due = now + delay * random.uniform(0.5, 1.0)
        if due <= item.deadline:
            self.work.retry_at(due, item)
        else:
            self._finish(item, "deferred", answer)

    # -- the sessions -----------------------------------------------------------

    def session(self, first: smtplib.SMTP | None) -> None:
        client = first
        used = time.monotonic()
        try:
            while (item := self.work.take()) is not None:
                try:
                    if client is not None and time.monotonic() - used > IDLE_CHECK_S:
                        client = self._still_open(client)
                    if client is None:
                        client = self._connect(item)
                    if client is not None and not self._send(client, item):
                        client.close()
                        client = None
                    used = time.monotonic()
                except BaseException as exc:
                    self.work.abort(exc)
                finally:
                    self.work.done()
        finally:
            if client is not None:
                _quit(client)

    def _still_open(self, client: smtplib.SMTP) -> smtplib.SMTP | None:
        try:
            code, _ = client.noop()
        except (OSError, smtplib.SMTPException):
            code = 0
        if code == 250:
            return client
        client.close()
        return None

    def _connect(self, item: _Item) -> smtplib.SMTP | None:
        try:
            return self.relay.open(timeout=self.timeout, context=self.context)
        except (OSError, smtplib.SMTPException) as exc:
            item.attempts += 1
            self._record(
                item,
                SendState.DEFERRED,
                f"cannot reach the relay {self.relay.shown}: {exc or type(exc).__name__}",
            )
            return None

    def _send(self, client: smtplib.SMTP, item: _Item) -> bool:
        """Hand one message over; False when the session is no longer usable."""
        message = item.message
        if item.payload is None:
            try:
                item.payload = message.build()
            except (ValueError, TypeError, LookupError, UnicodeError) as exc:
                self._finish(item, "skipped", f"{message.where}: cannot be built: {exc}")
                return True
        item.attempts += 1
        if item.to is None:
            item.to = message.envelope_to
        options: list[str] = []
        if not (message.sender + item.to).isascii():
            if not client.has_extn("smtputf8"):
                self._record(
                    item,
                    SendState.DEFERRED,
                    "the relay does not take non-ASCII addresses (no SMTPUTF8)",
                )
                return True
            options.append("SMTPUTF8")
        try:
            code, answer = client.mail(message.sender, options)
            if code != 250:
                return self._refused(client, item, "MAIL FROM", code, answer)
            code, answer = client.rcpt(item.to)
            if code not in (250, 251):
                return self._refused(client, item, "RCPT TO", code, answer)
            if self.pace is not None:
                self.pace.wait()
            self.log.sending(message.ref)
            try:
                code, answer = client.data(item.payload)
            except smtplib.SMTPDataError as exc:
                return self._refused(client, item, "DATA", exc.smtp_code, exc.smtp_error)
        except (OSError, smtplib.SMTPException) as exc:
            self._record(item, SendState.DEFERRED, f"connection lost: {exc or type(exc).__name__}")
            return False
        if 200 <= code < 300:
            self._record(item, SendState.SENT, f"{code} {_text(answer)}")
            return True
        return self._refused(client, item, "end of DATA", code, answer, reset=False)

    def _refused(
        self,
        client: smtplib.SMTP,
        item: _Item,
        stage: str,
        code: int,
        answer: bytes | str,
        *,
        reset: bool = True,
    ) -> bool:
        said = f"{code} {_text(answer)}"
        if code == 530 or (stage == "MAIL FROM" and code >= 500):
            raise SendAborted(
                f"the relay {self.relay.shown} refused {stage} for "
                f"{item.message.sender!r}: {said}; the run stopped"
            )
        if 500 <= code < 600:
            self._record(item, SendState.FAILED, said)
        else:
            self._record(item, SendState.DEFERRED, said)
        if code == 421:
            return False
        if reset:
            try:
                client.rset()
            except (OSError, smtplib.SMTPException):
                return False
        return True

    # -- reading ------------------------------------------------------------------

    def next_batch(self) -> list[_Item] | None:
        """The next messages of the output that still need sending; None at its end."""
        batch = list(itertools.islice(self.messages, BATCH))
        if not batch:
            return None
        addressed: list[OutgoingMessage] = []
        for message in batch:
            if message.to is None:
                self._finish(_Item(message), "skipped", "the message has no address (to)")
            else:
                addressed.append(message)
        needed = self.log.to_send([m.ref for m in addressed]) if addressed else set()
        items = [_Item(message) for message in addressed if message.ref in needed]
        if len(items) < len(addressed):
            with self.lock:
                self.counts["already"] += len(addressed) - len(items)
        return items


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def send_messages(
    messages: Iterable[OutgoingMessage],
    relay: SmtpRelay,
    log: SendLog,
    *,
    connections: int = 4,
    rate: float | None = None,
    retry_for: float = 60.0,
    progress: Callable[[Outcome], None] | None = None,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> SendSummary:
    """Send ``messages`` (each to its ``to``) through ``relay``, recording each in ``log``.

    The first session is opened before anything is recorded, so a relay that
    cannot be reached or refuses the login fails the run with nothing marked
    (:class:`pools.relay.RelayError` or :class:`SendAborted`).
    """
    if connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be more than 0 messages per second, not {rate}")
    if retry_for < 0:
        raise ValueError(f"retry_for must be 0 seconds or more, not {retry_for}")
    started = time.monotonic()
    # One context for every session: loading the trust store costs tens of
    # milliseconds, and a CA file that cannot be read fails the run here.
    context = tls_context()
    try:
        first = relay.open(timeout=timeout, context=context)
    except (OSError, smtplib.SMTPException) as exc:
        raise SendAborted(
            f"cannot reach the relay {relay.shown}: {exc or type(exc).__name__}; nothing was sent"
        ) from exc
    run = _Run(
        messages,
        relay,
        log,
        context=context,
        connections=connections,
        rate=rate,
        retry_for=retry_for,
        backoff=backoff,
        timeout=timeout,
        progress=progress,
    )
    threads = [
        threading.Thread(
            target=run.session, args=(first if i == 0 else None,), name=f"promomail-send-{i}"
        )
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException as exc:  # Ctrl-C: the sessions stop after their message
        run.work.abort(exc)
        for thread in threads:
            thread.join()
    if run.work.stop is not None:
        raise run.work.stop
    # The summary counts what is durable.
    log.flush()
    counts = run.counts
    return SendSummary(
        sent=counts["sent"],
        deferred=counts["deferred"],
        failed=counts["failed"],
        skipped=counts["skipped"],
        already=counts["already"],
        codes_returned=run.codes_returned,
        seconds=time.monotonic() - started,
        skipped_messages=tuple(run.skipped),
    )
