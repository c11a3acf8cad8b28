"""The one form every mail service's delivery events are read into.

Each provider module turns what its service sends into :class:`DeliveryEvent`
values; the store applies them without knowing which service spoke. Nothing
here touches the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from promomail.pools.errors import PromomailError

#: SPEC 8: a delivery reference is at most 64 characters of this alphabet.
_REF = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A service's own event id is a key for deduplication, not a document.
MAX_EVENT_ID = 256
MAX_DETAIL = 1000

PROVIDERS = ("ses", "sendgrid", "mailgun", "postmark", "promomail", "dsn")


class EventType(StrEnum):
    DELIVERED = "delivered"
    BOUNCE = "bounce"
    DROPPED = "dropped"
    COMPLAINT = "complaint"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class DeliveryEvent:
    """One service's word about one message.

    ``event_id`` is the service's own id (SNS ``MessageId``, ``sg_event_id``,
    Mailgun ``id``, Postmark ``ID``, the DSN's ``Message-ID``, promomail's
    ``id``); where one notification names several recipients each gets
    ``:<n>`` appended (1-based), so applying the same notification twice
    gives the same ids. ``ref`` is None when the event carries no valid
    reference (the event then counts as unmatched). ``at`` is naive UTC.
    """

    provider: str
    event_id: str
    ref: str | None
    type: EventType
    permanent: bool
    at: datetime | None
    detail: str

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {self.provider!r}")
        if not self.event_id or len(self.event_id) > MAX_EVENT_ID:
            raise ValueError("event id must be 1 to 256 characters")
        if self.ref is not None and not is_valid_ref(self.ref):
            raise ValueError(f"invalid delivery reference {self.ref!r}")
        if self.at is not None and self.at.tzinfo is not None:
            raise ValueError("at must be naive UTC")
        if len(self.detail) > MAX_DETAIL:
            raise ValueError("detail is longer than 1000 characters")


class EventBatch(list[DeliveryEvent]):
    """The events of one webhook request, and what the store must remember to refuse a replay.

    ``replay_token`` is set where the service's signature covers a one-time
    token (Mailgun): the signature alone cannot tell a replay, so the store
    refuses a token it has seen before. It need remember the token only
    until ``replay_expires`` (naive UTC): after that the request's own
    timestamp is refused as stale. Other providers leave both None and rely
    on event ids, which make a replayed event change nothing.
    """

    def __init__(
        self,
        events: Iterable[DeliveryEvent] = (),
        *,
        replay_token: str | None = None,
        replay_expires: datetime | None = None,
    ) -> None:
        super().__init__(events)
        self.replay_token = replay_token
        self.replay_expires = replay_expires


def is_valid_ref(text: object) -> bool:
    """Whether ``text`` has the form of a delivery reference (SPEC 8)."""
    return isinstance(text, str) and _REF.fullmatch(text) is not None


def valid_ref_or_none(value: object) -> str | None:
    """The reference an event carries, or None when it is absent or malformed.

    A malformed reference names no message, so the event is unmatched rather
    than refused: services retry any answer but a 2xx.
    """
    return value if isinstance(value, str) and is_valid_ref(value) else None


def clean_detail(text: object) -> str:
    """A service's diagnostic made safe to store and print: printable, one line, bounded."""
    if text is None:
        return ""
    raw = str(text)[: MAX_DETAIL * 4]  # bound the work before cleaning
    printable = "".join(ch if ch.isprintable() else " " for ch in raw)
    return " ".join(printable.split())[:MAX_DETAIL]


def naive_utc(moment: datetime) -> datetime:
    """``moment`` in UTC without its zone (a naive value is taken to be UTC already)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


class DeliveryError(PromomailError):
    """A delivery event (a webhook request or an event file) is refused.

    ``provider`` names the service, ``detail`` what is at fault (a header, a
    field path such as ``events[2].type``, a certificate URL).
    """

    def __init__(self, provider: str, detail: str) -> None:
        self.provider = provider
        self.detail = detail
        super().__init__(f"{provider} event: {detail}")


class NotConfigured(DeliveryError):
    """The provider has no configuration on this server (the route answers 404)."""


class Unverified(DeliveryError):
    """The request does not prove it comes from the service (401)."""


class SnsUnreachable(DeliveryError):
    """An SNS URL (signing certificate, subscription confirmation) could not be fetched.

    Nothing was verified or applied; the fault is on the way to SNS, not in
    the request, so a front end answers it as a temporary failure (5xx) and
    SNS sends again.
    """


class TopicNotAllowed(DeliveryError):
    """A verified SNS message from a topic this server does not listen to (403)."""


class MalformedEvent(DeliveryError):
    """The body or file cannot be read as the service's events; names the field or line."""


class UnreadableBody(MalformedEvent):
    """Not even JSON (or far too large to be): a front end answers 400, not 422."""


__all__ = [
    "MAX_DETAIL",
    "MAX_EVENT_ID",
    "PROVIDERS",
    "DeliveryError",
    "DeliveryEvent",
    "EventBatch",
    "EventType",
    "MalformedEvent",
    "NotConfigured",
    "SnsUnreachable",
    "TopicNotAllowed",
    "UnreadableBody",
    "Unverified",
    "clean_detail",
    "is_valid_ref",
    "naive_utc",
    "valid_ref_or_none",
]
