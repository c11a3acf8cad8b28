"""Reading hostile request bodies: bounded JSON and fields named by their path.

Every refusal is a :class:`MalformedEvent` naming the field (``events[2].type``),
never a ``KeyError`` or a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from promomail.delivery.events import MAX_EVENT_ID, MalformedEvent, UnreadableBody, naive_utc

#: The services cap their webhook bodies at 1 MiB; anything larger is not theirs.
MAX_BODY = 1024 * 1024
#: Timestamps outside this window are not a real event's (and would overflow datetime).
_EARLIEST = datetime(2000, 1, 1)
_LATEST = datetime(2200, 1, 1)


def load_json(body: bytes, provider: str, *, what: str = "body") -> Any:
    """``body`` parsed as JSON, refused when too large or not JSON.

    orjson bounds the nesting (1024 levels) and the integers (64 bits) itself,
    so an absurd document fails in C instead of exhausting Python's stack.
    """
    if len(body) > MAX_BODY:
        raise UnreadableBody(provider, f"{what} is larger than {MAX_BODY} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UnreadableBody(provider, f"{what} is not valid JSON: {exc}") from None


def mapping(value: Any, provider: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MalformedEvent(provider, f"{where or 'the event'} must be an object")
    return value


def sequence(value: Any, provider: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedEvent(provider, f"{where or 'the document'} must be an array")
    return value


def child(parent: Mapping[str, Any], key: str, provider: str, where: str) -> Any:
    """``parent[key]``, or a refusal naming ``where.key`` as missing."""
    try:
        return parent[key]
    except KeyError:
        raise MalformedEvent(provider, f"{join(where, key)} is missing") from None


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def text(
    parent: Mapping[str, Any],
    key: str,
    provider: str,
    where: str,
    *,
    required: bool = True,
    max_length: int = 4096,
) -> str | None:
    """A string field; None when optional and absent (or null)."""
    value = parent.get(key)
    if value is None:
        if required:
            raise MalformedEvent(provider, f"{join(where, key)} is missing")
        return None
    if not isinstance(value, str):
        raise MalformedEvent(provider, f"{join(where, key)} must be a string")
    if len(value) > max_length:
        raise MalformedEvent(provider, f"{join(where, key)} is longer than {max_length} characters")
    return value


def required_text(
    parent: Mapping[str, Any], key: str, provider: str, where: str, *, max_length: int = 4096
) -> str:
    value = text(parent, key, provider, where, max_length=max_length)
    assert value is not None  # required=True refuses None
    return value


def event_id(parent: Mapping[str, Any], key: str, provider: str, where: str) -> str:
    """The service's own id of an event: a non-empty string (or an integer id, as Postmark's)."""
    value = parent.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    # Printable only: a NUL cannot be stored in PostgreSQL text, and an id is shown.
    if not isinstance(value, str) or not value or not value.isprintable():
        raise MalformedEvent(provider, f"{join(where, key)} is missing or not an id")
    if len(value) > MAX_EVENT_ID - 8:  # room for a ":<n>" recipient suffix
        raise MalformedEvent(provider, f"{join(where, key)} is too long")
    return value


def timestamp(value: Any, provider: str, where: str) -> datetime | None:
    """An event time as naive UTC: ISO 8601 text or Unix seconds; None when absent."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int | float):
            moment = datetime.fromtimestamp(value, UTC)
        elif isinstance(value, str) and len(value) <= 64:
            moment = datetime.fromisoformat(value)
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError, OSError):
        raise MalformedEvent(provider, f"{where} is not a time") from None
    moment = naive_utc(moment)
    if not _EARLIEST <= moment < _LATEST:
        raise MalformedEvent(provider, f"{where} is not a plausible time")
    return moment


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers keyed by their lower-case name (HTTP names are case-insensitive)."""
    return {name.lower(): value for name, value in headers.items()}
