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

import re
import smtplib
import threading
import time
from collections.abc import Callable, Iterable

from promomail.delivery.outgoing import OutgoingMessage
from promomail.delivery.send_records import MemoryLog as MemoryLog
from promomail.delivery.send_records import Outcome as Outcome
from promomail.delivery.send_records import SendAborted as SendAborted
from promomail.delivery.send_records import SendLog as SendLog
from promomail.delivery.send_records import SendState as SendState
from promomail.delivery.send_records import SendSummary as SendSummary
from promomail.delivery.smtp_run import _Run
from promomail.pools.errors import InvalidSetting
from promomail.pools.relay import SmtpRelay, tls_context

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
