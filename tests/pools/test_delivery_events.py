"""The normalised event, its reference rule, the webhook configuration, and
promomail's own event form."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promomail.delivery import own
from promomail.delivery.config import DEFAULT_SNS_CERT_URL, WebhookConfig
from promomail.delivery.events import (
    DeliveryError,
    DeliveryEvent,
    EventType,
    MalformedEvent,
    NotConfigured,
    TopicNotAllowed,
    Unverified,
    clean_detail,
    is_valid_ref,
)
from promomail.delivery.providers import WEBHOOK_PROVIDERS, verify_and_parse
from promomail.pools.errors import InvalidSetting, PromomailError
from tests.support.delivery_helpers import NOW, REF, TOPIC


@given(st.text(max_size=80))
def test_a_reference_is_1_to_64_of_the_urlsafe_alphabet(text: str) -> None:
    assert is_valid_ref(text) == bool(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text))


@pytest.mark.parametrize("text", ["", "a" * 65, "a\n", "ab c", "é", None, 12])
def test_what_is_not_a_reference(text: Any) -> None:
    assert not is_valid_ref(text)


@given(st.text(max_size=3000))
def test_a_detail_is_printable_one_line_and_bounded(text: str) -> None:
    detail = clean_detail(text)
    assert len(detail) <= 1000 and detail.isprintable() and detail == detail.strip()


def test_an_event_refuses_what_the_store_could_not_keep() -> None:
    fields: dict[str, Any] = {
        "provider": "ses",
        "event_id": "m",
        "ref": REF,
        "type": EventType.BOUNCE,
        "permanent": True,
        "at": NOW,
        "detail": "",
    }
    DeliveryEvent(**fields)
    for bad in (
        {"provider": "smoke-signals"},
        {"event_id": ""},
        {"ref": "a b"},
        {"at": datetime(2026, 1, 1, tzinfo=UTC)},
        {"detail": "x" * 1001},
    ):
        with pytest.raises(ValueError):
            DeliveryEvent(**{**fields, **bad})


def test_every_refusal_is_a_promomail_error_naming_provider_and_fault() -> None:
    for kind in (NotConfigured, Unverified, TopicNotAllowed, MalformedEvent):
        error = kind("mailgun", "signature.token is missing")
        assert isinstance(error, DeliveryError) and isinstance(error, PromomailError)
        assert (error.provider, error.detail) == ("mailgun", "signature.token is missing")
        assert str(error) == "mailgun event: signature.token is missing"


# --- configuration -----------------------------------------------------------


def test_the_environment_configures_each_provider() -> None:
    config = WebhookConfig.from_env(
        {
            "PROMOMAIL_SNS_TOPICS": f" {TOPIC} , arn:aws:sns:us-east-1:1:b,,",
            "PROMOMAIL_MAILGUN_SIGNING_KEY": "key-1",
            "PROMOMAIL_POSTMARK_AUTH": "hook:secret",
            "PROMOMAIL_SENDGRID_PUBLIC_KEY": "",
        }
    )
    assert config.sns_topics == {TOPIC, "arn:aws:sns:us-east-1:1:b"}
    assert config.sns_cert_url == DEFAULT_SNS_CERT_URL
    assert config.sendgrid_public_key is None  # empty is unset
    assert "secret" not in repr(config) and "key-1" not in repr(config)
    assert WebhookConfig.from_env({}) == WebhookConfig()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PROMOMAIL_SNS_CERT_URL", "https://sns.(["),
        ("PROMOMAIL_SNS_TOPICS", "promomail-events"),
        ("PROMOMAIL_POSTMARK_AUTH", "no-colon"),
        ("PROMOMAIL_SENDGRID_PUBLIC_KEY", "AAAA"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(InvalidSetting, match=variable):
        WebhookConfig.from_env({variable: value})


def test_every_webhook_provider_is_reached_by_name() -> None:
    assert set(WEBHOOK_PROVIDERS) == {"ses", "sendgrid", "mailgun", "postmark", "promomail"}
    for provider in ("ses", "sendgrid", "mailgun", "postmark"):
        with pytest.raises(NotConfigured):
            verify_and_parse(provider, b"{}", {}, WebhookConfig(), now=NOW)


# --- promomail's own form ----------------------------------------------------


def own_events(*events: dict[str, Any]) -> Any:
    body = json.dumps({"events": list(events)}).encode()
    return own.verify_and_parse(body, {}, WebhookConfig(), now=NOW)


EVENT = {
    "ref": REF,
    "type": "bounce",
    "permanent": True,
    "at": "2026-12-07T12:00:00+01:00",
    "id": "ev-1",
    "detail": "550\tno such\x00user",
}


def test_own_events_are_read_as_written() -> None:
    [bounce, delivered] = own_events(EVENT, {"ref": REF, "type": "delivered", "id": "ev-2"})
    assert bounce == DeliveryEvent(
        provider="promomail",
        event_id="ev-1",
        ref=REF,
        type=EventType.BOUNCE,
        permanent=True,
        at=datetime(2026, 12, 7, 11, 0),
        detail="550 no such user",
    )
    assert (delivered.permanent, delivered.at, delivered.detail) == (False, None, "")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ref": None}, r"events\[1\]\.ref is missing"),
        ({"ref": "a b"}, r"events\[1\]\.ref is not a delivery reference"),
        ({"type": "exploded"}, r"events\[1\]\.type must be one of delivered, bounce"),
        ({"permanent": "yes"}, r"events\[1\]\.permanent"),
        ({"id": ""}, r"events\[1\]\.id"),
        ({"id": "x" * 300}, r"events\[1\]\.id is too long"),
        ({"at": "noon"}, r"events\[1\]\.at is not a time"),
        ({"at": 10**20}, r"events\[1\]\.at is not a time"),
        ({"detail": 5}, r"events\[1\]\.detail must be a string"),
    ],
)
def test_a_malformed_own_event_names_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedEvent, match=field):
        own_events(EVENT, {**EVENT, **change})


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"[]", "body must be an object"), (b"{}", "events must be an array"), (b"{", "JSON")],
)
def test_a_malformed_own_body_is_refused(body: bytes, field: str) -> None:
    with pytest.raises(MalformedEvent, match=field):
        own.verify_and_parse(body, {}, WebhookConfig(), now=NOW)
