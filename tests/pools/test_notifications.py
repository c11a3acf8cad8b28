"""Low-stock alerts: a warning every time, real webhook and SMTP sinks once a day."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

import promomail.pools.codes.notifications
from promomail.pools.admin.lifecycle import archive_pool
from promomail.pools.codes.notifications import (
    SMTP_URL_ENV,
    NoticeStatus,
    Sink,
    check_low_stock,
    claim_daily_notice,
)
from promomail.pools.codes.webhooks import ALLOW_PRIVATE_ENV
from promomail.pools.errors import PoolNotFound
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.models import Pool
from tests.support.racing import check_low_stock_when_released, run_together
from tests.support.sinks import Inbox, Webhook, closed_port, smtp_inbox, webhook_receiver
from tests.support.store_helpers import make_pool

MORNING = datetime(2030, 5, 1, 8, 0)
EVENING = datetime(2030, 5, 1, 23, 59, 59)
NEXT_DAY = datetime(2030, 5, 2, 0, 0)


# --- a real HTTP server and a real SMTP server on 127.0.0.1 -----------------


@pytest.fixture(autouse=True)
def allow_local_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sinks here listen on 127.0.0.1, which webhooks reach only when allowed."""
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "127.0.0.1")


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with webhook_receiver("/hooks/low-stock") as received:
        yield received


@pytest.fixture
def smtp() -> Iterator[Inbox]:
    with smtp_inbox("alerts@shop.example") as inbox:
        yield inbox


@pytest.fixture(name="closed_port")
def closed_port_fixture() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    return closed_port()


def _notified_at(engine: Engine, pool_id: str) -> datetime | None:
    with engine.connect() as conn:
        value: datetime | None = conn.execute(
            select(Pool.low_stock_notified_at).where(Pool.id == pool_id)
        ).scalar_one()
    return value


# --- tests ------------------------------------------------------------------


def test_sinks_are_told_once_a_day(engine: Engine, webhook: Webhook, smtp: Inbox) -> None:
    make_pool(
        engine,
        "spring",
        ["S1", "S2", "S3"],
        low_stock=50,
        notify_url=webhook.url,
        notify_email="ops@shop.example",
    )

    [alert] = check_low_stock(engine, ["spring"], smtp_url=smtp.url, now=MORNING)

    assert alert.message == "pool 'spring' is low on codes: 3 available, threshold 50"
    assert alert.notice == NoticeStatus.NOTIFIED
    assert [(d.sink, d.ok, d.outcome) for d in alert.deliveries] == [
        (Sink.WEBHOOK, True, "delivered"),
        (Sink.EMAIL, True, "delivered"),
    ]
    assert alert.warnings() == [alert.message]
    assert webhook.bodies == [
        {
            "event": "low_stock",
            "pool": "spring",
            "name": "spring",
            "available": 3,
            "threshold": 50,
            "time": "2030-05-01T08:00:00Z",
            "message": alert.message,
        }
    ]
    [(sender, recipients, mail)] = smtp.messages
    assert (sender, recipients) == ("alerts@shop.example", ["ops@shop.example"])
    assert mail["Subject"] == f"[promomail] {alert.message}"
    assert mail["To"] == "ops@shop.example"
    assert "Available codes: 3" in mail.get_content()

    # Later the same day: the warning again, the sinks not.
    [again] = check_low_stock(engine, ["spring"], smtp_url=smtp.url, now=EVENING)
    assert again.notice == NoticeStatus.ALREADY_NOTIFIED and again.deliveries == ()
    assert again.message == alert.message
    assert (len(webhook.bodies), len(smtp.messages)) == (1, 1)

    # A new UTC day: told again, once.
    for _ in range(2):
        check_low_stock(engine, ["spring"], smtp_url=smtp.url, now=NEXT_DAY)
    assert (len(webhook.bodies), len(smtp.messages)) == (2, 2)
    assert webhook.bodies[1]["time"] == "2030-05-02T00:00:00Z"


def test_threshold_is_a_strict_bound(engine: Engine, webhook: Webhook) -> None:
    make_pool(engine, "spring", ["S1", "S2", "S3"], low_stock=3, notify_url=webhook.url)
    make_pool(engine, "unwatched", ["U1"])

    assert check_low_stock(engine, ["spring", "unwatched"], now=MORNING) == []

    claim(engine, "spring", "m1", ["alice"])
    [alert] = check_low_stock(engine, ["spring", "unwatched"])
    assert (alert.pool_id, alert.available, alert.threshold) == ("spring", 2, 3)
    assert len(webhook.bodies) == 1


def test_pool_without_sinks_warns_every_time_and_claims_nothing(engine: Engine) -> None:
    make_pool(engine, "quiet", ["Q1"], low_stock=10)

    for moment in (MORNING, EVENING):
        [alert] = check_low_stock(engine, ["quiet"], now=moment)
        assert alert.notice == NoticeStatus.NO_SINKS
        assert alert.warnings() == ["pool 'quiet' is low on codes: 1 available, threshold 10"]
    assert _notified_at(engine, "quiet") is None


def test_sinks_that_are_down_fail_without_raising(
    engine: Engine, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SMTP_URL_ENV, f"smtp://127.0.0.1:{closed_port}")
    make_pool(
        engine,
        "spring",
        ["S1"],
        low_stock=5,
        notify_url=f"http://127.0.0.1:{closed_port}/hook",
        notify_email="ops@shop.example",
    )

    [alert] = check_low_stock(engine, ["spring"], now=MORNING, timeout=2.0)

    assert alert.notice == NoticeStatus.NOTIFIED
    assert [(d.sink, d.ok) for d in alert.deliveries] == [
        (Sink.WEBHOOK, False),
        (Sink.EMAIL, False),
    ]
    assert all("refused" in (d.error or "").lower() for d in alert.deliveries)
    assert alert.warnings()[1].startswith(
        f"pool 'spring': low-stock webhook to http://127.0.0.1:{closed_port}/hook failed: "
    )
    # Nothing arrived anywhere, so the day's notice was given back for a later check.
    assert _notified_at(engine, "spring") is None
    [retry] = check_low_stock(engine, ["spring"], now=EVENING, timeout=2.0)
    assert retry.notice == NoticeStatus.NOTIFIED and len(retry.failures) == 2


def test_one_working_sink_counts_as_notified(
    engine: Engine, webhook: Webhook, closed_port: int
) -> None:
    make_pool(
        engine,
        "spring",
        ["S1"],
        low_stock=5,
        notify_url=webhook.url,
        notify_email="ops@shop.example",
    )

    [alert] = check_low_stock(
        engine, ["spring"], smtp_url=f"smtp://127.0.0.1:{closed_port}", now=MORNING
    )

    assert [d.ok for d in alert.deliveries] == [True, False]
    assert _notified_at(engine, "spring") == MORNING
    [again] = check_low_stock(engine, ["spring"], now=EVENING)
    assert again.notice == NoticeStatus.ALREADY_NOTIFIED
    assert len(webhook.bodies) == 1


def test_webhook_error_status_and_missing_smtp_configuration(
    engine: Engine, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SMTP_URL_ENV, raising=False)
    webhook.status = 500
    make_pool(
        engine,
        "spring",
        ["S1"],
        low_stock=5,
        notify_url=webhook.url,
        notify_email="ops@shop.example",
    )

    [alert] = check_low_stock(engine, ["spring"], now=MORNING)

    assert [d.error for d in alert.deliveries] == [
        "HTTP 500 Internal Server Error",
        f"no SMTP server configured (set {SMTP_URL_ENV})",
    ]
    assert len(webhook.bodies) == 1
    [bad_url] = check_low_stock(engine, ["spring"], smtp_url="mailto:ops", now=MORNING)
    assert bad_url.deliveries[1].error is not None
    assert "not an SMTP URL" in bad_url.deliveries[1].error


def test_smtp_url_from_the_environment(
    engine: Engine, smtp: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SMTP_URL_ENV, smtp.url.split("?")[0])
    make_pool(engine, "spring", ["S1"], low_stock=5, notify_email="ops@shop.example")

    [alert] = check_low_stock(engine, ["spring"], now=MORNING)

    assert [d.outcome for d in alert.deliveries] == ["delivered"]
    [(sender, recipients, _)] = smtp.messages
    assert (sender, recipients) == ("promomail@localhost", ["ops@shop.example"])


def test_only_active_known_pools_are_checked(engine: Engine) -> None:
    make_pool(engine, "draft", ["D1"], low_stock=5, activate=False)
    make_pool(engine, "old", ["O1"], low_stock=5)
    archive_pool(engine, "old")

    assert check_low_stock(engine, ["draft", "old"]) == []
    with pytest.raises(PoolNotFound):
        check_low_stock(engine, ["draft", "missing"])


def test_daily_claim_is_taken_once(engine: Engine) -> None:
    make_pool(engine, "spring", ["S1"], low_stock=5)

    assert claim_daily_notice(engine, "spring", MORNING)
    assert not claim_daily_notice(engine, "spring", EVENING)
    assert not claim_daily_notice(engine, "spring", MORNING - timedelta(hours=1))
    assert claim_daily_notice(engine, "spring", NEXT_DAY)
    assert _notified_at(engine, "spring") == NEXT_DAY


def test_concurrent_checks_notify_once(engine: Engine, db_url: str, webhook: Webhook) -> None:
    make_pool(engine, "spring", ["S1", "S2"], low_stock=10, notify_url=webhook.url)

    notices = run_together(
        check_low_stock_when_released, [(db_url, "spring", MORNING.isoformat())] * 4
    )

    assert sorted(notices) == sorted(["notified"] + ["already_notified"] * 3)
    assert len(webhook.bodies) == 1


def test_an_unexpected_sink_error_is_a_failed_delivery(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in a sink")

    monkeypatch.setattr(promomail.pools.codes.notifications, "post_webhook", broken)
    make_pool(engine, "spring", ["S1"], low_stock=5, notify_url="http://127.0.0.1:9/hook")

    [alert] = check_low_stock(engine, ["spring"], now=MORNING)

    assert [d.error for d in alert.deliveries] == ["RuntimeError: bug in a sink"]
