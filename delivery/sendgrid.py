"""SendGrid's Event Webhook: a JSON array of events signed with ECDSA (P-256, SHA-256).

The signature covers the timestamp header followed by the raw body, so the
body is verified exactly as received, before it is parsed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from promomail.delivery._reading import (
    MAX_BODY,
    event_id,
    load_json,
    lower_headers,
    mapping,
    sequence,
    timestamp,
)
from promomail.delivery.config import WebhookConfig
from promomail.delivery.events import (
    DeliveryEvent,
    EventBatch,
    EventType,
    MalformedEvent,
    NotConfigured,
    Unverified,
    clean_detail,
    valid_ref_or_none,
)

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

#: SendGrid event -> (type, permanent). ``bounce`` covers its ``blocked`` type too:
#: SendGrid does not retry either, so the message never arrives (SPEC 8).
_KINDS = {
    "bounce": (EventType.BOUNCE, True),
    "dropped": (EventType.DROPPED, True),
    "deferred": (EventType.DEFERRED, False),
    "delivered": (EventType.DELIVERED, False),
    "spamreport": (EventType.COMPLAINT, False),
}


def verify_and_parse(
    body: bytes, headers: Mapping[str, str], config: WebhookConfig, *, now: datetime
) -> EventBatch:
    """The events of one SendGrid request whose signature holds; kinds not about
    delivery (``open``, ``click``, ``processed``…) are skipped."""
    if config.sendgrid_public_key is None:
        raise NotConfigured(
            PROVIDER, "no SendGrid public key is configured (PROMOMAIL_SENDGRID_PUBLIC_KEY)"
        )
    if len(body) > MAX_BODY:
        raise MalformedEvent(PROVIDER, f"body is larger than {MAX_BODY} bytes")
    found = lower_headers(headers)
    signature_text = found.get(SIGNATURE_HEADER.lower())
    stamp = found.get(TIMESTAMP_HEADER.lower())
    if not signature_text or not stamp:
        raise Unverified(PROVIDER, f"{SIGNATURE_HEADER} or {TIMESTAMP_HEADER} is missing")
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except binascii.Error:
        raise Unverified(PROVIDER, f"{SIGNATURE_HEADER} is not base64") from None
    try:
        config.sendgrid_key.verify(
            signature, stamp.encode("utf-8", "surrogateescape") + body, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, ValueError):
        raise Unverified(PROVIDER, "the signature does not match the body") from None
    events = sequence(load_json(body, PROVIDER), PROVIDER, "body")
    return EventBatch(_parse(events))


def _parse(items: list[object]) -> list[DeliveryEvent]:
    events = []
    for index, item in enumerate(items):
        where = f"[{index}]"
        event = mapping(item, PROVIDER, where)
        kind = event.get("event")
        if not isinstance(kind, str):
            raise MalformedEvent(PROVIDER, f"{where}.event is missing or not a string")
        if kind not in _KINDS:
            continue
        event_type, permanent = _KINDS[kind]
        detail = " ".join(
            str(event[key])
            for key in ("type", "status", "reason", "response")
            if isinstance(event.get(key), str | int) and not isinstance(event.get(key), bool)
        )
        events.append(
            DeliveryEvent(
                provider=PROVIDER,
                event_id=event_id(event, "sg_event_id", PROVIDER, where),
                ref=valid_ref_or_none(event.get("promomail_ref")),
                type=event_type,
                permanent=permanent,
                at=timestamp(event.get("timestamp"), PROVIDER, f"{where}.timestamp"),
                detail=clean_detail(f"{kind} {detail}".strip()),
            )
        )
    return events


__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "verify_and_parse"]
