"""Bounce messages: RFC 3464 delivery status notifications, and others where recognised.

A DSN names each recipient's fate in its ``message/delivery-status`` part
(``Action``, ``Status``) and returns the message or its headers, where the
``X-Promomail-Ref`` the render wrote is read back. Mail servers that send
bounces of their own making (qmail, older Exim, Exchange…) are recognised
by GNU Mailman's ``flufl.bounce`` detectors, which know dozens of such
forms; the reference is then read from the returned text.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.utils
import hashlib
import logging
import re
from datetime import datetime
from typing import Any

from flufl.bounce import all_failures

from promomail.delivery.events import (
    DeliveryEvent,
    EventType,
    MalformedEvent,
    clean_detail,
    naive_utc,
    valid_ref_or_none,
)

PROVIDER = "dsn"
#: A bounce returns at most the message it bounces; promomail's messages are small.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_PARTS = 256
MAX_RECIPIENTS = 1000
_MAX_HEADER = 998  # RFC 5322's line limit: a longer value is not a real header's

#: DSN Action -> (event type, permanent). ``failed``: the MTA gave up, the
#: message will not arrive whatever its status class says.
_ACTIONS = {
    "failed": (EventType.BOUNCE, True),
    "delayed": (EventType.DEFERRED, False),
    "delivered": (EventType.DELIVERED, False),
    "relayed": (EventType.DELIVERED, False),
    "expanded": (EventType.DELIVERED, False),
}
# flufl.bounce logs a traceback for every detector that trips over a message
# before it re-raises; on hostile input that is expected and is answered as
# "not a known bounce", so its log would only put tracebacks on a user's screen.
_flufl_log = logging.getLogger("flufl.bounce")
_flufl_log.addHandler(logging.NullHandler())
_flufl_log.propagate = False

#: A recipient without the (required) Action: its Status class says what happened.
_STATUS_CLASSES = {"5.": "failed", "4.": "delayed", "2.": "delivered"}
_REF_LINE = re.compile(rb"^X-Promomail-Ref:[ \t]*([A-Za-z0-9_-]{1,64})[ \t]*\r?$", re.I | re.M)


def parse_bounce(data: bytes, provider: str = PROVIDER) -> list[DeliveryEvent]:
    """The events one bounce message reports: one per recipient of a DSN, one for
    a recognised non-standard bounce. A message that is neither is refused."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedEvent(provider, f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        message = email.message_from_bytes(data)
        parts = _parts(message, provider)
    except RecursionError:
        raise MalformedEvent(provider, "the message nests its parts too deeply") from None
    event_id = _message_id(message, data)
    sent_at = _date(_header(message, "Date"))
    for part in parts:
        if part.get_content_type() == "message/delivery-status":
            return _dsn_events(part, parts, event_id, sent_at, provider)
    return _other_bounce(message, parts, event_id, sent_at, provider)


def _parts(message: email.message.Message, provider: str) -> list[email.message.Message]:
    found = []
    for part in message.walk():
        found.append(part)
        if len(found) > MAX_PARTS:
            raise MalformedEvent(provider, f"the message has more than {MAX_PARTS} parts")
    return found


def _dsn_events(
    status_part: email.message.Message,
    parts: list[email.message.Message],
    event_id: str,
    sent_at: datetime | None,
    provider: str,
) -> list[DeliveryEvent]:
    blocks = status_part.get_payload()
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise MalformedEvent(provider, "the delivery-status part names no recipient")
    per_message, recipients = blocks[0], blocks[1:]
    if len(recipients) > MAX_RECIPIENTS:
        raise MalformedEvent(provider, f"the DSN names more than {MAX_RECIPIENTS} recipients")
    ref = _reference(parts)
    arrived = _date(_header(per_message, "Arrival-Date")) or sent_at
    events = []
    for n, block in enumerate(recipients, 1):
        status = (_header(block, "Status") or "").strip()
        action = (_header(block, "Action") or _STATUS_CLASSES.get(status[:2], "")).strip().lower()
        if action not in _ACTIONS:
            continue  # RFC 3464 has no other action; a recipient we cannot read changes nothing
        event_type, permanent = _ACTIONS[action]
        detail = " ".join(
            part for part in (action, status, _header(block, "Diagnostic-Code")) if part
        )
        events.append(
            DeliveryEvent(
                provider=provider,
                event_id=event_id if len(recipients) == 1 else f"{event_id}:{n}",
                ref=ref,
                type=event_type,
                permanent=permanent,
                at=_date(_header(block, "Last-Attempt-Date")) or arrived,
                detail=clean_detail(detail),
            )
        )
    if not events:
        raise MalformedEvent(provider, "no recipient of the DSN has a known Action")
    return events


def _other_bounce(
    message: email.message.Message,
    parts: list[email.message.Message],
    event_id: str,
    sent_at: datetime | None,
    provider: str,
) -> list[DeliveryEvent]:
    try:
        temporary, permanent = all_failures(message)
    except Exception:
        # The detectors are heuristics run over hostile text; one that trips
        # over it has recognised nothing.
        temporary = permanent = frozenset()
    if not (temporary or permanent):
        raise MalformedEvent(provider, "not a delivery status notification nor a known bounce")
    return [
        DeliveryEvent(
            provider=provider,
            event_id=event_id,
            ref=_reference(parts),
            type=EventType.BOUNCE,
            permanent=bool(permanent),
            at=sent_at,
            detail=clean_detail(
                f"{'permanent' if permanent else 'temporary'} failure (non-standard bounce)"
            ),
        )
    ]


def _reference(parts: list[email.message.Message]) -> str | None:
    """``X-Promomail-Ref`` of the returned message (``message/rfc822``) or headers
    (``text/rfc822-headers``), else the first such line in any text part."""
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            returned = part.get_payload()
            if isinstance(returned, list) and returned:
                found = _header(returned[0], "X-Promomail-Ref")
                if found is not None:
                    return valid_ref_or_none(found.strip())
        elif kind == "text/rfc822-headers":
            headers = email.parser.BytesHeaderParser().parsebytes(_decoded(part))
            found = _header(headers, "X-Promomail-Ref")
            if found is not None:
                return valid_ref_or_none(found.strip())
    for part in parts:
        if part.get_content_maintype() == "text":
            match = _REF_LINE.search(_decoded(part))
            if match:
                return match.group(1).decode("ascii")
    return None


def _decoded(part: email.message.Message) -> bytes:
    payload: Any = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _header(message: Any, name: str) -> str | None:
    if not isinstance(message, email.message.Message):
        return None
    value = message.get(name)
    if value is None:
        return None
    return str(value)[:_MAX_HEADER]


def _message_id(message: email.message.Message, data: bytes) -> str:
    """The DSN's Message-ID; a DSN without one is named by its content, so the
    same file imported twice still counts once."""
    found = (_header(message, "Message-ID") or "").strip().strip("<>").strip()
    if found and len(found) <= 200 and found.isprintable():
        return found
    return "sha256:" + hashlib.sha256(data).hexdigest()[:40]


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return naive_utc(email.utils.parsedate_to_datetime(value.strip()))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


__all__ = ["MAX_MESSAGE_BYTES", "parse_bounce"]
