"""SendGrid's Event Webhook: a real P-256 signature over timestamp and raw body."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from promomail.delivery import sendgrid
from promomail.delivery.config import WebhookConfig
from promomail.delivery.events import EventType, MalformedEvent, NotConfigured, Unverified
from promomail.pools.errors import InvalidSetting
from tests.support.delivery_helpers import NOW, REF, SendgridSigner, sendgrid_event

SIGNER = SendgridSigner()
CONFIG = WebhookConfig(sendgrid_public_key=SIGNER.public_key)


def parse(
    body: bytes, headers: dict[str, str] | None = None, config: WebhookConfig = CONFIG
) -> Any:
    return sendgrid.verify_and_parse(
        body, SIGNER.headers(body) if headers is None else headers, config, now=NOW
    )


def test_a_signed_batch_gives_each_delivery_event_and_skips_the_others() -> None:
    events = [
        sendgrid_event("processed"),
        sendgrid_event("bounce", type="bounce", status="5.1.1", reason="550 no such user"),
        sendgrid_event("bounce", n=1, type="blocked", reason="550 blocked"),
        sendgrid_event("dropped", reason="Bounced Address"),
        sendgrid_event("deferred", response="421 try later"),
        sendgrid_event("delivered", response="250 OK"),
        sendgrid_event("spamreport"),
        sendgrid_event("open", useragent="Mozilla"),
    ]
    parsed = parse(json.dumps(events).encode())
    assert [(e.type, e.permanent) for e in parsed] == [
        (EventType.BOUNCE, True),
        (EventType.BOUNCE, True),
        (EventType.DROPPED, True),
        (EventType.DEFERRED, False),
        (EventType.DELIVERED, False),
        (EventType.COMPLAINT, False),
    ]
    assert {e.ref for e in parsed} == {REF} and {e.provider for e in parsed} == {"sendgrid"}
    assert parsed[0].event_id == "sg-bounce-0" and "550 no such user" in parsed[0].detail
    assert parsed[0].at is not None and parsed[0].at.isoformat() == "2026-12-07T11:59:50"
    assert parsed.replay_token is None


def test_a_missing_or_malformed_reference_is_no_reference() -> None:
    events = [sendgrid_event("bounce", ref=None), sendgrid_event("bounce", ref="a b", n=1)]
    assert [e.ref for e in parse(json.dumps(events).encode())] == [None, None]


def test_header_names_are_case_insensitive() -> None:
    body = json.dumps([sendgrid_event("dropped")]).encode()
    headers = {name.lower(): value for name, value in SIGNER.headers(body).items()}
    assert len(parse(body, headers)) == 1


def test_a_changed_body_or_timestamp_is_refused() -> None:
    body = json.dumps([sendgrid_event("delivered")]).encode()
    headers = SIGNER.headers(body)
    with pytest.raises(Unverified, match="does not match"):
        parse(body.replace(b"delivered", b"bounce"), headers)
    with pytest.raises(Unverified, match="does not match"):
        parse(body, {**headers, sendgrid.TIMESTAMP_HEADER: "1796644801"})


def test_a_signature_by_another_key_is_refused() -> None:
    body = json.dumps([sendgrid_event("bounce")]).encode()
    with pytest.raises(Unverified):
        parse(body, SendgridSigner().headers(body))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {sendgrid.TIMESTAMP_HEADER: "1796644800"},
        {sendgrid.SIGNATURE_HEADER: "MEUCIQ==", sendgrid.TIMESTAMP_HEADER: ""},
        {sendgrid.SIGNATURE_HEADER: "not base64!", sendgrid.TIMESTAMP_HEADER: "1"},
        {sendgrid.SIGNATURE_HEADER: "AAAA", sendgrid.TIMESTAMP_HEADER: "1"},
    ],
)
def test_missing_or_garbled_signature_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(Unverified):
        parse(b"[]", headers)


def test_without_a_key_sendgrid_is_not_configured() -> None:
    with pytest.raises(NotConfigured, match="PROMOMAIL_SENDGRID_PUBLIC_KEY"):
        parse(b"[]", config=WebhookConfig())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{}", "body must be an array"),
        (b"[1]", r"\[0\] must be an object"),
        (b'[{"event": 3}]', r"\[0\]\.event"),
        (
            json.dumps([sendgrid_event("bounce"), {"event": "bounce"}]).encode(),
            r"\[1\]\.sg_event_id",
        ),
        (
            json.dumps([{**sendgrid_event("bounce"), "timestamp": "soon"}]).encode(),
            r"\[0\]\.timestamp",
        ),
        (b"[" * 5000, "not valid JSON"),
    ],
)
def test_a_malformed_body_names_its_field(body: bytes, field: str) -> None:
    with pytest.raises(MalformedEvent, match=field):
        parse(body)


def test_a_body_over_the_cap_is_refused_before_it_is_verified() -> None:
    with pytest.raises(MalformedEvent, match="larger than"):
        parse(b" " * (1024 * 1024 + 1), {})


@pytest.mark.parametrize("key", ["not base64!", "AAAA", "RSA"])
def test_a_key_that_is_not_a_p256_public_key_is_refused_at_start(key: str) -> None:
    if key == "RSA":
        public = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
        key = base64.b64encode(
            public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode()
    with pytest.raises(InvalidSetting, match="PROMOMAIL_SENDGRID_PUBLIC_KEY"):
        WebhookConfig.from_env({"PROMOMAIL_SENDGRID_PUBLIC_KEY": key})
