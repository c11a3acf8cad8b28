"""promomail's own event form, for any other service or a script.

``{"events": [{"ref", "type", "permanent", "at", "id", "detail"}]}`` over
HTTP (the service checks the ``events`` token), or one such event object a
line in a JSON Lines file (:mod:`delivery.files`). The writer is ours, so a
malformed reference is refused rather than counted as unmatched.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from promomail.delivery._reading import (
    event_id,
    join,
    load_json,
    mapping,
    sequence,
    text,
    timestamp,
)
from promomail.delivery.config import WebhookConfig
from promomail.delivery.events import (
    DeliveryEvent,
    EventBatch,
    EventType,
    MalformedEvent,
    clean_detail,
    is_valid_ref,
)

PROVIDER = "promomail"
_TYPES = {t.value: t for t in EventType}


def verify_and_parse(
    body: bytes, headers: Mapping[str, str], config: WebhookConfig, *, now: datetime
) -> EventBatch:
    """The events of one request; the caller has checked its token (scope ``events``)."""
    document = mapping(load_json(body, PROVIDER), PROVIDER, "body")
    items = sequence(document.get("events"), PROVIDER, "events")
    return EventBatch(parse_event(item, f"events[{n}]") for n, item in enumerate(items))


def parse_event(item: Any, where: str, provider: str = PROVIDER) -> DeliveryEvent:
    """One event object; ``where`` names it in a refusal (``events[3]``; empty for a line of a file)."""
    event = mapping(item, provider, where)
    ref = text(event, "ref", provider, where, max_length=64)
    if not is_valid_ref(ref):
        raise MalformedEvent(provider, f"{join(where, 'ref')} is not a delivery reference")
    kind = event.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        raise MalformedEvent(provider, f"{join(where, 'type')} must be one of {', '.join(_TYPES)}")
    permanent = event.get("permanent", False)
    if not isinstance(permanent, bool):
        raise MalformedEvent(provider, f"{join(where, 'permanent')} must be true or false")
    detail = text(event, "detail", provider, where, required=False, max_length=64 * 1024)
    return DeliveryEvent(
        provider=provider,
        event_id=event_id(event, "id", provider, where),
        ref=ref,
        type=_TYPES[kind],
        permanent=permanent,
        at=timestamp(event.get("at"), provider, join(where, "at")),
        detail=clean_detail(detail),
    )


__all__ = ["parse_event", "verify_and_parse"]
