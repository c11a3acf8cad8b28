"""Mailgun webhooks: a real HMAC-SHA256, stale timestamps, and the token for replays."""

from __future__ import annotations

import json
from typing import Any

import pytest

from promomail.delivery import mailgun
from promomail.delivery.config import WebhookConfig
from promomail.delivery.events import EventType, MalformedEvent, NotConfigured, Unverified
from tests.support.delivery_helpers import MAILGUN_KEY, NOW, REF, later, mailgun_body, mailgun_event

CONFIG = WebhookConfig(mailgun_signing_key=MAILGUN_KEY)


def parse(body: bytes, config: WebhookConfig = CONFIG, **kwargs: Any) -> Any:
    return mailgun.verify_and_parse(body, {}, config, now=kwargs.get("now", NOW))


@pytest.mark.parametrize(
    ("kind", "severity", "expected"),
    [
        ("failed", "permanent", (EventType.BOUNCE, True)),
        ("failed", "temporary", (EventType.DEFERRED, False)),
        ("delivered", None, (EventType.DELIVERED, False)),
        ("complained", None, (EventType.COMPLAINT, False)),
    ],
)
def test_a_signed_event_is_read(kind: str, severity: str | None, expected: Any) -> None:
    [event] = batch = parse(mailgun_body(mailgun_event(kind, severity)))
    assert (event.type, event.permanent) == expected
    assert (event.provider, event.event_id, event.ref) == ("mailgun", f"mg-{kind}-{severity}", REF)
    assert batch.replay_token == "c2f1e9bd0fe0b39b2f82c9b0e6a0d2b5f4a0c8e2d1b3a4f5e6"
    assert batch.replay_expires == later(300)  # after that the timestamp is refused anyway


def test_the_token_of_a_skipped_kind_is_still_handed_over() -> None:
    batch = parse(mailgun_body(mailgun_event("opened", None), token="t-opened"))
    assert list(batch) == [] and batch.replay_token == "t-opened"


def test_a_missing_or_malformed_reference_is_no_reference() -> None:
    assert parse(mailgun_body(mailgun_event(ref=None)))[0].ref is None
    assert parse(mailgun_body(mailgun_event(ref="../x")))[0].ref is None


def test_a_signature_under_another_key_is_refused() -> None:
    with pytest.raises(Unverified, match="does not match"):
        parse(mailgun_body(mailgun_event(), key="key-other"))


def test_a_changed_token_is_refused() -> None:
    body = json.loads(mailgun_body(mailgun_event()))
    body["signature"]["token"] = "another"
    with pytest.raises(Unverified, match="does not match"):
        parse(json.dumps(body).encode())


@pytest.mark.parametrize("seconds", [-301, 301, 10**9])
def test_a_timestamp_more_than_five_minutes_off_is_refused(seconds: int) -> None:
    with pytest.raises(Unverified, match="5 minutes"):
        parse(mailgun_body(mailgun_event()), now=later(seconds))


@pytest.mark.parametrize("seconds", [-299, 0, 299])
def test_a_timestamp_within_five_minutes_is_taken(seconds: int) -> None:
    assert len(parse(mailgun_body(mailgun_event()), now=later(seconds))) == 1


@pytest.mark.parametrize(
    "signature",
    [None, {}, {"timestamp": 1796644800, "token": "t", "signature": "00"}, {"timestamp": "x"}],
)
def test_a_missing_signature_is_refused(signature: Any) -> None:
    body = {"event-data": mailgun_event()} if signature is None else {"signature": signature}
    with pytest.raises(Unverified):
        parse(json.dumps(body).encode())


def test_without_a_key_mailgun_is_not_configured() -> None:
    with pytest.raises(NotConfigured, match="PROMOMAIL_MAILGUN_SIGNING_KEY"):
        parse(mailgun_body(mailgun_event()), WebhookConfig())


@pytest.mark.parametrize(
    ("event_data", "field"),
    [
        (None, "event-data must be an object"),
        ({"id": "x"}, r"event-data\.event is missing"),
        ({**mailgun_event(), "id": None}, r"event-data\.id"),
        ({**mailgun_event(), "timestamp": "yesterday"}, r"event-data\.timestamp"),
        ({**mailgun_event(), "severity": 3}, r"event-data\.severity"),
    ],
)
def test_a_malformed_event_names_its_field(event_data: Any, field: str) -> None:
    with pytest.raises(MalformedEvent, match=field):
        parse(mailgun_body(event_data))
