"""Postmark webhooks: basic auth, and each record type read."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from promomail.delivery import postmark
from promomail.delivery.config import WebhookConfig
from promomail.delivery.events import EventType, MalformedEvent, NotConfigured, Unverified
from promomail.pools.errors import InvalidSetting
from tests.support.delivery_helpers import NOW, POSTMARK_AUTH, REF, basic_auth, postmark_bounce

CONFIG = WebhookConfig(postmark_auth=POSTMARK_AUTH)


def parse(event: Any, headers: dict[str, str] | None = None, config: WebhookConfig = CONFIG) -> Any:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    return postmark.verify_and_parse(
        body, basic_auth() if headers is None else headers, config, now=NOW
    )


def test_a_hard_bounce_is_permanent_and_a_soft_one_is_not() -> None:
    [hard] = parse(postmark_bounce("HardBounce"))
    assert (hard.type, hard.permanent, hard.ref) == (EventType.BOUNCE, True, REF)
    assert hard.event_id == "4323372036854775807" and "5.1.1" in hard.detail
    assert hard.at is not None and hard.at.isoformat() == "2026-12-07T11:59:55.907025"
    for kind in ("SoftBounce", "Transient", "DnsError", "AutoResponder"):
        [soft] = parse(postmark_bounce(kind))
        assert (soft.type, soft.permanent) == (EventType.BOUNCE, False)


def test_deliveries_and_complaints() -> None:
    delivery = {
        "RecordType": "Delivery",
        "MessageID": "883953f4",
        "Recipient": "r@example.org",
        "DeliveredAt": "2026-12-07T11:59:55-05:00",
        "Details": "250 OK",
        "Metadata": {"promomail_ref": REF},
    }
    [delivered] = parse(delivery)
    assert (delivered.type, delivered.event_id, delivered.ref) == (
        EventType.DELIVERED,
        "delivery:883953f4",
        REF,
    )
    assert delivered.at is not None and delivered.at.isoformat() == "2026-12-07T16:59:55"
    complaint = {**postmark_bounce(), "RecordType": "SpamComplaint", "Type": "SpamComplaint"}
    assert parse(complaint)[0].type is EventType.COMPLAINT


def test_other_record_types_give_nothing() -> None:
    assert parse({"RecordType": "Open", "MessageID": "x"}) == []


def test_header_names_are_case_insensitive() -> None:
    [(name, value)] = basic_auth().items()
    assert len(parse(postmark_bounce(), {name.lower(): value})) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic_auth("promomail:wrong"),
        basic_auth("promomail:s3cret-hook "),
        basic_auth("promomail"),
        {"Authorization": "Bearer " + base64.b64encode(POSTMARK_AUTH.encode()).decode()},
        {"Authorization": "Basic not-base64!"},
    ],
)
def test_wrong_or_missing_credentials_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(Unverified):
        parse(postmark_bounce(), headers)


def test_credentials_are_checked_before_the_body_is_read() -> None:
    with pytest.raises(Unverified):
        parse(b"not json", {})


def test_without_credentials_postmark_is_not_configured() -> None:
    with pytest.raises(NotConfigured, match="PROMOMAIL_POSTMARK_AUTH"):
        parse(postmark_bounce(), config=WebhookConfig())


def test_credentials_must_be_user_and_password() -> None:
    with pytest.raises(InvalidSetting, match="PROMOMAIL_POSTMARK_AUTH"):
        WebhookConfig.from_env({"PROMOMAIL_POSTMARK_AUTH": "just-a-password"})


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (b"[]", "body must be an object"),
        ({"Type": "HardBounce"}, "RecordType"),
        ({**postmark_bounce(), "Type": None}, "Type is missing"),
        ({**postmark_bounce(), "ID": True}, "ID is missing or not an id"),
        ({"RecordType": "Delivery"}, "MessageID"),
        ({**postmark_bounce(), "BouncedAt": "then"}, "BouncedAt"),
    ],
)
def test_a_malformed_event_names_its_field(event: Any, field: str) -> None:
    with pytest.raises(MalformedEvent, match=field):
        parse(event)
