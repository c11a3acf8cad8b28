"""Mailgun webhooks: a JSON object whose ``signature`` is an HMAC-SHA256 of timestamp and token.

The HMAC proves Mailgun made the request but not that it is the first time
it arrives: a timestamp more than five minutes off is refused here, and the
token is handed to the store (:attr:`EventBatch.replay_token`) to refuse
one seen before.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from promomail.delivery._reading import (
    event_id,
    load_json,
    mapping,
    required_text,
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
    naive_utc,
    valid_ref_or_none,
)

PROVIDER = "mailgun"
MAX_SKEW = timedelta(minutes=5)
_MAX_TOKEN = 256


def verify_and_parse(
    body: bytes, headers: Mapping[str, str], config: WebhookConfig, *, now: datetime
) -> EventBatch:
    """The event of one Mailgun request, with its token as ``replay_token``;
    an event kind not about delivery (``opened``, ``clicked``…) gives none."""
    key = config.mailgun_signing_key
    if key is None:
        raise NotConfigured(
            PROVIDER, "no Mailgun signing key is configured (PROMOMAIL_MAILGUN_SIGNING_KEY)"
        )
    document = mapping(load_json(body, PROVIDER), PROVIDER, "body")
    signed = document.get("signature")
    if not isinstance(signed, dict):
        raise Unverified(PROVIDER, "signature is missing")
    stamp, token, signature = (signed.get(k) for k in ("timestamp", "token", "signature"))
    if not (
        isinstance(stamp, str)
        and stamp.isdigit()
        and len(stamp) <= 12
        and isinstance(token, str)
        and 0 < len(token) <= _MAX_TOKEN
        and isinstance(signature, str)
    ):
        raise Unverified(PROVIDER, "signature.timestamp, token or signature is missing")
    expected = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape")):
        raise Unverified(PROVIDER, "the signature does not match")
    signed_at = datetime.fromtimestamp(int(stamp), UTC).replace(tzinfo=None)
    if abs(signed_at - naive_utc(now)) > MAX_SKEW:
        raise Unverified(
            PROVIDER, "signature.timestamp is more than 5 minutes off (a replay or a stale request)"
        )
    data = mapping(document.get("event-data"), PROVIDER, "event-data")
    return EventBatch(_parse(data), replay_token=token, replay_expires=signed_at + MAX_SKEW)


def _parse(data: Mapping[str, Any]) -> list[DeliveryEvent]:
    where = "event-data"
    kind = required_text(data, "event", PROVIDER, where, max_length=64)
    severity = data.get("severity")
    if kind == "failed":
        permanent = severity == "permanent"
        # A temporary failure is one Mailgun retries by itself.
        event_type = EventType.BOUNCE if permanent else EventType.DEFERRED
    elif kind == "delivered":
        event_type, permanent = EventType.DELIVERED, False
    elif kind == "complained":
        event_type, permanent = EventType.COMPLAINT, False
    else:
        return []
    variables = data.get("user-variables")
    ref = valid_ref_or_none(variables.get("promomail_ref")) if isinstance(variables, dict) else None
    status = data.get("delivery-status")
    parts: list[object] = [kind, severity, data.get("reason")]
    if isinstance(status, dict):
        parts += [status.get("code"), status.get("message"), status.get("description")]
    detail = " ".join(str(p) for p in parts if isinstance(p, str | int) and not isinstance(p, bool))
    if not isinstance(severity, str | None):
        raise MalformedEvent(PROVIDER, f"{where}.severity must be a string")
    return [
        DeliveryEvent(
            provider=PROVIDER,
            event_id=event_id(data, "id", PROVIDER, where),
            ref=ref,
            type=event_type,
            permanent=permanent,
            at=timestamp(data.get("timestamp"), PROVIDER, f"{where}.timestamp"),
            detail=clean_detail(detail),
        )
    ]


__all__ = ["MAX_SKEW", "verify_and_parse"]
