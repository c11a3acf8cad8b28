"""One send run's SMTP sessions: each takes the next message, hands it to the
relay and records the answer (see :mod:`delivery.sending` for what each answer
means)."""

from __future__ import annotations

import itertools
import random
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterable

from promomail.delivery.outgoing import OutgoingMessage
from promomail.delivery.send_queue import _Item, _Pace, _Work
from promomail.delivery.send_records import Outcome, SendAborted, SendLog, SendState
from promomail.pools.relay import SmtpRelay

#: Refs asked of the log at once: one store query per this many messages.
BATCH = 256
#: A session idle this long is checked with NOOP before it is used again.
IDLE_CHECK_S = 20.0
MAX_BACKOFF_S = 30.0


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
