"""Hostile bodies: whatever a request holds, each provider answers with events
or a DeliveryError, never another exception. Bodies are authenticated where
the provider checks a signature, so the parsers behind it are reached."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promomail.delivery import mailgun, own, postmark, sendgrid, ses
from promomail.delivery.config import WebhookConfig
from promomail.delivery.events import DeliveryError, DeliveryEvent, EventBatch
from promomail.delivery.ses import SnsEndpoint
from tests.support.delivery_helpers import (
    CERT_URL,
    MAILGUN_KEY,
    NOW,
    POSTMARK_AUTH,
    TOPIC,
    SendgridSigner,
    SnsSigner,
    basic_auth,
    mailgun_body,
    sns_notification,
)

SNS = SnsSigner()
SENDGRID = SendgridSigner()
CONFIG = WebhookConfig(
    sns_topics=frozenset({TOPIC}),
    sendgrid_public_key=SENDGRID.public_key,
    mailgun_signing_key=MAILGUN_KEY,
    postmark_auth=POSTMARK_AUTH,
)
ENDPOINT = SnsEndpoint(lambda url: SNS.pem)

#: The fields the services send, so generated objects reach past the first check.
_KEYS = st.sampled_from(
    [
        *("eventType", "notificationType", "bounce", "complaint", "delivery", "mail", "tags"),
        *("headers", "name", "value", "bouncedRecipients", "bounceType", "timestamp"),
        *("promomail_ref", "event", "sg_event_id", "type", "severity", "id", "user-variables"),
        *("delivery-status", "RecordType", "Type", "ID", "MessageID", "Metadata", "BouncedAt"),
        *("events", "ref", "permanent", "at", "detail", "recipients", "DeliveredAt", "message"),
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            *("Bounce", "Permanent", "Delivery", "Complaint", "bounce", "dropped", "failed"),
            *("permanent", "HardBounce", "delivered", "2026-12-07T12:00:00Z", "Zr4_x-9Q"),
        ]
    )
)
JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_KEYS | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)


def _sendgrid(body: bytes) -> EventBatch:
    return sendgrid.verify_and_parse(body, SENDGRID.headers(body), CONFIG, now=NOW)


def _postmark(body: bytes) -> EventBatch:
    return postmark.verify_and_parse(body, basic_auth(), CONFIG, now=NOW)


def _own(body: bytes) -> EventBatch:
    return own.verify_and_parse(body, {}, CONFIG, now=NOW)


def _mailgun_raw(body: bytes) -> EventBatch:
    return mailgun.verify_and_parse(body, {}, CONFIG, now=NOW)


def _ses_raw(body: bytes) -> EventBatch:
    return ses.verify_and_parse(body, {}, CONFIG, now=NOW, sns=ENDPOINT)


PARSERS: dict[str, Callable[[bytes], EventBatch]] = {
    "sendgrid": _sendgrid,
    "postmark": _postmark,
    "promomail": _own,
    "mailgun": _mailgun_raw,
    "ses": _ses_raw,
}


def _answer(parse: Callable[[bytes], EventBatch], body: bytes) -> None:
    try:
        batch = parse(body)
    except DeliveryError:
        return
    assert isinstance(batch, EventBatch)
    assert all(isinstance(event, DeliveryEvent) for event in batch)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("provider", PARSERS)
@FUZZ
@given(body=st.binary(max_size=300))
def test_any_bytes(provider: str, body: bytes) -> None:
    _answer(PARSERS[provider], body)


@pytest.mark.parametrize("provider", PARSERS)
@FUZZ
@given(document=JSON)
def test_any_json(provider: str, document: Any) -> None:
    _answer(PARSERS[provider], json.dumps(document).encode())


@FUZZ
@given(event_data=JSON)
def test_any_signed_mailgun_event(event_data: Any) -> None:
    _answer(_mailgun_raw, mailgun_body(event_data))


@FUZZ
@given(message=JSON, version=st.sampled_from(["1", "2"]))
def test_any_signed_sns_message(message: Any, version: str) -> None:
    envelope = sns_notification(SNS, json.dumps(message), version=version, cert_url=CERT_URL)
    _answer(_ses_raw, json.dumps(envelope).encode())


@FUZZ
@given(
    message=st.dictionaries(_KEYS, JSON, max_size=6),
    kind=st.sampled_from(["Bounce", "Complaint", "Delivery"]),
)
def test_any_signed_ses_event_of_a_known_kind(message: dict[str, Any], kind: str) -> None:
    envelope = sns_notification(SNS, {**message, "eventType": kind})
    _answer(_ses_raw, json.dumps(envelope).encode())
