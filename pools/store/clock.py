"""One notion of "now" for the store: naive UTC, as every timestamp is stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def to_utc_naive(moment: datetime) -> datetime:
    """Aware datetimes are converted to UTC; naive ones are taken as UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


@overload
def iso_seconds(moment: datetime) -> str: ...
@overload
def iso_seconds(moment: datetime | None) -> str | None: ...
def iso_seconds(moment: datetime | None) -> str | None:
    """A stored moment as every document shows it: ISO 8601 to the second, naive
    UTC (``2026-12-07T18:16:58``); None for no moment."""
    return moment.isoformat(timespec="seconds") if moment is not None else None
