"""Postmark webhooks: one event per request, authenticated by HTTP basic auth only.

Postmark signs nothing; the credentials in the webhook URL are the proof,
compared in constant time with the configured ``user:password``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from promomail.delivery._reading import event_id, load_json, lower_headers, mapping, timestamp
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

PROVIDER = "postmark"


def verify_and_parse(
    body: bytes, headers: Mapping[str, str], config: WebhookConfig, *, now: datetime
) -> EventBatch:
    """The event of one Postmark request with the right credentials; record types
    not about delivery (``Open``, ``Click``, ``SubscriptionChange``) give none."""
    if config.postmark_auth is None:
        raise NotConfigured(
            PROVIDER, "no Postmark credentials are configured (PROMOMAIL_POSTMARK_AUTH)"
        )
    _authenticate(lower_headers(headers).get("authorization", ""), config.postmark_auth)
    return EventBatch(_parse(mapping(load_json(body, PROVIDER), PROVIDER, "body")))


def _authenticate(header: str, expected: str) -> None:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise Unverified(PROVIDER, "the request has no basic auth (Authorization header)")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise Unverified(PROVIDER, "the Authorization header is not base64") from None
    if not hmac.compare_digest(given, expected.encode()):
        raise Unverified(PROVIDER, "the basic auth credentials are wrong")


def _parse(event: Mapping[str, Any]) -> list[DeliveryEvent]:
    kind = event.get("RecordType")
    if not isinstance(kind, str):
        raise MalformedEvent(PROVIDER, "RecordType is missing or not a string")
    metadata = event.get("Metadata")
    ref = valid_ref_or_none(metadata.get("promomail_ref")) if isinstance(metadata, dict) else None
    if kind == "Bounce":
        bounce = event.get("Type")
        if not isinstance(bounce, str):
            raise MalformedEvent(PROVIDER, "Type is missing or not a string")
        event_type, permanent = EventType.BOUNCE, bounce == "HardBounce"
        ident = event_id(event, "ID", PROVIDER, "")
        at_key, parts = "BouncedAt", [bounce, event.get("Description"), event.get("Details")]
    elif kind == "SpamComplaint":
        event_type, permanent = EventType.COMPLAINT, False
        ident = event_id(event, "ID", PROVIDER, "")
        at_key, parts = "BouncedAt", [kind, event.get("Details")]
    elif kind == "Delivery":
        # A delivery event has no ID of its own: its message's id names it,
        # since a message is delivered once.
        event_type, permanent = EventType.DELIVERED, False
        ident = "delivery:" + event_id(event, "MessageID", PROVIDER, "")
        at_key, parts = "DeliveredAt", [kind, event.get("Details")]
    else:
        return []
    return [
        DeliveryEvent(
            provider=PROVIDER,
            event_id=ident,
            ref=ref,
            type=event_type,
            permanent=permanent,
            at=timestamp(event.get(at_key), PROVIDER, at_key),
            detail=clean_detail(" ".join(p for p in parts if isinstance(p, str))),
        )
    ]


__all__ = ["verify_and_parse"]
