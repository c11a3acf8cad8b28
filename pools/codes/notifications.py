"""Low-stock alerts: a warning for the caller, a notice to the pool's sinks once a day.

A pool is low when its available count is below its ``low_stock`` threshold
(so a threshold of 0 never fires). Every check of a low pool returns an
alert with a human message, for the caller to print as a warning. The
pool's sinks (webhook URL, e-mail address) are told at most once per UTC day:
the right to notify is claimed with one conditional ``UPDATE`` of
``pools.low_stock_notified_at``, so of many workers checking at once exactly
one wins, whatever the database.

Decisions:

* Only active pools are checked: a draft or archived pool issues nothing, so
  its stock cannot run low in a way that matters.
* A pool without sinks produces the warning but claims nothing, so sinks
  configured later the same day are still told.
* When every sink of a pool fails, the claim is given back and the next
  check tries again: "at most once a day" counts notices that arrived. When
  some sink succeeded, the day counts as notified (retrying would repeat the
  notice to the sinks that got it).
* A sink never raises: each delivery's outcome (delivered, or failed with a
  reason) is recorded in the alert, for the caller to show.

The SMTP URL is read by :mod:`pools.relay`, as for ``send``; its optional
``?from=address`` sets the notices' sender (default ``promomail@localhost``).
"""

from __future__ import annotations

import http.client
import json
import os
import smtplib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, or_, select, update

from promomail.pools.admin.lookup import unknown_pool
from promomail.pools.codes.counts import available_count
from promomail.pools.codes.webhooks import TargetRefused, checked_addresses, connection_to

# Named here too: the notices' settings are read where the notices are sent.
from promomail.pools.relay import SMTP_URL_ENV as SMTP_URL_ENV
from promomail.pools.relay import InvalidSmtpUrl, RelayError, SmtpRelay
from promomail.pools.store.clock import iso_seconds, to_utc_naive, utcnow
from promomail.pools.store.db import read_transaction, write_transaction
from promomail.pools.store.models import Pool, PoolStatus

DEFAULT_SENDER = "promomail@localhost"
DEFAULT_TIMEOUT_S = 5.0
#: What a failed delivery says where its reason is not shown.
FAILED = "delivery failed (the reason is in the server log)"


class Sink(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


class NoticeStatus(StrEnum):
    #: This check won the day's claim and tried the sinks (see the deliveries).
    NOTIFIED = "notified"
    #: The sinks were already told today (by this or another process).
    ALREADY_NOTIFIED = "already_notified"
    #: The pool has no webhook URL and no e-mail address.
    NO_SINKS = "no_sinks"


@dataclass(frozen=True)
class Delivery:
    sink: Sink
    target: str
    ok: bool
    error: str | None = None

    @property
    def outcome(self) -> str:
        return "delivered" if self.ok else f"failed: {self.error}"

    def as_dict(self, *, details: bool = True) -> dict[str, Any]:
        """The delivery as a document; without ``details``, a failure is only "failed".

        The reason a delivery failed (connection refused, the answer of a
        server, a refused address) tells about the network the sender sits
        in: a front end that answers people who are not its operator (the
        HTTP API) shows :data:`FAILED` instead, and logs the reason.
        """
        error = self.error if details or self.error is None else FAILED
        return {"sink": str(self.sink), "target": self.target, "ok": self.ok, "error": error}


@dataclass(frozen=True)
class LowStockAlert:
    pool_id: str
    pool_name: str
    available: int
    threshold: int
    at: datetime
    notice: NoticeStatus
    deliveries: tuple[Delivery, ...] = ()

    @property
    def message(self) -> str:
        return (
            f"pool {self.pool_id!r} is low on codes: {self.available} available, "
            f"threshold {self.threshold}"
        )

    @property
    def failures(self) -> list[Delivery]:
        return [d for d in self.deliveries if not d.ok]

    def warnings(self) -> list[str]:
        """Lines for the caller to print: the alert, then each failed delivery."""
        lines = [self.message]
        lines += [
            f"pool {self.pool_id!r}: low-stock {d.sink} to {d.target} failed: {d.error}"
            for d in self.failures
        ]
        return lines

    def payload(self) -> dict[str, Any]:
        """The JSON body posted to the webhook."""
        return {
            "event": "low_stock",
            "pool": self.pool_id,
            "name": self.pool_name,
            "available": self.available,
            "threshold": self.threshold,
            # The webhook's documented form: UTC, marked as such for other systems.
            "time": iso_seconds(self.at) + "Z",
            "message": self.message,
        }

    def as_dict(self, *, details: bool = True) -> dict[str, Any]:
        return {
            **self.payload(),
            "notice": str(self.notice),
            "deliveries": [d.as_dict(details=details) for d in self.deliveries],
        }


@dataclass(frozen=True)
class _LowPool:
    id: str
    name: str
    threshold: int
    available: int
    notify_url: str | None
    notify_email: str | None


def check_low_stock(
    engine: Engine,
    pool_ids: Sequence[str],
    *,
    smtp_url: str | None = None,
    now: datetime | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[LowStockAlert]:
    """An alert for each of these pools that is below its threshold, sinks told once a day."""
    moment = to_utc_naive(now) if now is not None else utcnow()
    with read_transaction(engine) as conn:
        low = _low_pools(conn, list(dict.fromkeys(pool_ids)), moment)
    alerts = []
    for pool in low:
        if not pool.notify_url and not pool.notify_email:
            alerts.append(_alert(pool, moment, NoticeStatus.NO_SINKS))
        elif not claim_daily_notice(engine, pool.id, moment):
            alerts.append(_alert(pool, moment, NoticeStatus.ALREADY_NOTIFIED))
        else:
            alert = _alert(pool, moment, NoticeStatus.NOTIFIED)
            deliveries = _deliver(alert, pool, smtp_url, timeout)
            if not any(d.ok for d in deliveries):
                release_daily_notice(engine, pool.id, moment)
            alerts.append(_alert(pool, moment, NoticeStatus.NOTIFIED, deliveries))
    return alerts


def _alert(
    pool: _LowPool, at: datetime, notice: NoticeStatus, deliveries: Sequence[Delivery] = ()
) -> LowStockAlert:
    return LowStockAlert(
        pool.id, pool.name, pool.available, pool.threshold, at, notice, tuple(deliveries)
    )


def _low_pools(conn: Connection, pool_ids: list[str], now: datetime) -> list[_LowPool]:
    rows = {row.id: row for row in conn.execute(select(Pool).where(Pool.id.in_(pool_ids)))}
    low = []
    for pool_id in pool_ids:
        row = rows.get(pool_id)
        if row is None:
            raise unknown_pool(conn, pool_id)
        if row.low_stock is None or row.status != PoolStatus.ACTIVE:
            continue
        available = available_count(conn, pool_id, now)
        if available < row.low_stock:
            low.append(
                _LowPool(
                    row.id, row.name, row.low_stock, available, row.notify_url, row.notify_email
                )
            )
    return low


def _start_of_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def claim_daily_notice(engine: Engine, pool_id: str, now: datetime) -> bool:
    """Take the pool's notice for ``now``'s UTC day; True for exactly one caller a day."""
    with write_transaction(engine) as conn:
        result = conn.execute(
            update(Pool)
            .where(
                Pool.id == pool_id,
                or_(
                    Pool.low_stock_notified_at.is_(None),
                    Pool.low_stock_notified_at < _start_of_day(now),
                ),
            )
            .values(low_stock_notified_at=now)
        )
        return bool(result.rowcount == 1)


def release_daily_notice(engine: Engine, pool_id: str, claimed_at: datetime) -> None:
    """Give back a claim whose notice reached nobody, so a later check tries again."""
    with write_transaction(engine) as conn:
        conn.execute(
            update(Pool)
            .where(Pool.id == pool_id, Pool.low_stock_notified_at == claimed_at)
            .values(low_stock_notified_at=None)
        )


def _deliver(
    alert: LowStockAlert, pool: _LowPool, smtp_url: str | None, timeout: float
) -> list[Delivery]:
    deliveries = []
    if pool.notify_url:
        url = pool.notify_url
        deliveries.append(
            _guarded(Sink.WEBHOOK, url, lambda: post_webhook(url, alert.payload(), timeout=timeout))
        )
    if pool.notify_email:
        server = smtp_url or os.environ.get(SMTP_URL_ENV)
        address = pool.notify_email
        deliveries.append(
            _guarded(
                Sink.EMAIL, address, lambda: send_email(server, address, alert, timeout=timeout)
            )
        )
    return deliveries


def _guarded(sink: Sink, target: str, send: Callable[[], Delivery]) -> Delivery:
    """A sink never raises: whatever goes wrong becomes a failed delivery."""
    try:
        return send()
    except Exception as exc:  # the caller must get its warning, not a crash
        return Delivery(sink, target, False, f"{type(exc).__name__}: {exc}")


#: Bytes of a webhook's answer read at most.
_MAX_ANSWER_BYTES = 64 * 1024


def post_webhook(url: str, body: dict[str, Any], *, timeout: float) -> Delivery:
    """POST ``body`` as JSON; any 2xx answer counts as delivered.

    Only to public addresses unless the operator allows others (see
    :mod:`pools.codes.webhooks`), checked now, at send time, and posted to
    the address checked; a redirect is an answer like any other (not 2xx),
    never followed.
    """
    try:
        addresses = checked_addresses(url)
    except TargetRefused as exc:
        return Delivery(Sink.WEBHOOK, url, False, f"refused: {exc}")
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = connection_to(url, addresses, timeout)
    try:
        connection.request(
            "POST",
            target,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "promomail"},
        )
        response = connection.getresponse()
        # The answer's body means nothing here: a little is read, never all
        # of whatever the receiver sends.
        response.read(_MAX_ANSWER_BYTES)
        status, reason = int(response.status), response.reason
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return Delivery(Sink.WEBHOOK, url, False, str(exc) or type(exc).__name__)
    finally:
        connection.close()
    if not 200 <= status < 300:
        return Delivery(Sink.WEBHOOK, url, False, f"HTTP {status} {reason}".rstrip())
    return Delivery(Sink.WEBHOOK, url, True)


def send_email(smtp_url: str | None, to: str, alert: LowStockAlert, *, timeout: float) -> Delivery:
    if not smtp_url:
        return Delivery(Sink.EMAIL, to, False, f"no SMTP server configured (set {SMTP_URL_ENV})")
    try:
        server = SmtpRelay.parse(smtp_url)
    except InvalidSmtpUrl as exc:
        return Delivery(Sink.EMAIL, to, False, str(exc))
    message = EmailMessage()
    message["From"] = server.sender or DEFAULT_SENDER
    message["To"] = to
    message["Subject"] = f"[promomail] {alert.message}"
    message.set_content(
        f"{alert.message}.\n\n"
        f"Pool: {alert.pool_name} ({alert.pool_id})\n"
        f"Available codes: {alert.available}\n"
        f"Threshold: {alert.threshold}\n"
        f"Checked at: {alert.at.isoformat(timespec='seconds')} UTC\n\n"
        "Upload or generate more codes. This notice is sent at most once a day per pool.\n"
    )
    try:
        with server.open(timeout=timeout) as client:
            client.send_message(message)
    except (OSError, smtplib.SMTPException, RelayError) as exc:
        return Delivery(Sink.EMAIL, to, False, str(exc) or type(exc).__name__)
    return Delivery(Sink.EMAIL, to, True)
