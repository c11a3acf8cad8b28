"""Choices and defaults a front end offers before it opens the store.

The command line declares its options with these (``--format``, ``--state``,
``--scope``, defaults shown in ``--help``); kept apart from the modules that
use them so that declaring an option, and completing one in a shell, imports
no SQLAlchemy. Plain constants and enums only: this module imports nothing
of the store.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum


class Whitespace(StrEnum):
    """What an upload does with whitespace around a code."""

    REJECT = "reject"
    STRIP = "strip"
    KEEP = "keep"


class FileFormat(StrEnum):
    TXT = "txt"
    CSV = "csv"


class CodeState(StrEnum):
    AVAILABLE = "available"
    PENDING = "pending"
    RESERVED = "reserved"
    ISSUED = "issued"
    REDEEMED = "redeemed"
    EXPIRED = "expired"
    VOID = "void"


class SegmentFormat(StrEnum):
    #: One id per line, no header.
    IDS = "ids"
    #: CSV with the header ``id``: usable as ``--recipients`` of a mailing.
    CSV = "csv"


class DeliveryStatus(StrEnum):
    """Where a message stands: the relay's answer, then the service's events."""

    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    BOUNCED = "bounced"
    DELIVERED = "delivered"


#: Every state a message may be in (``deliveries --status``).
DELIVERY_STATUSES: tuple[str, ...] = tuple(s.value for s in DeliveryStatus)


class Scope(StrEnum):
    READ = "read"
    REDEEM = "redeem"
    ADMIN = "admin"
    EVENTS = "events"


#: Upper-case letters and digits without the look-alikes 0/O and 1/I/L.
DEFAULT_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
DEFAULT_LENGTH = 10

DEFAULT_HOLD = timedelta(minutes=15)

DEFAULT_LEASE_SECONDS = 60.0

#: Column names accepted for the recipient id and for the e-mail address (any case).
ID_COLUMNS = ("id", "customer_id", "customer", "recipient", "recipient_id")
EMAIL_COLUMNS = ("email", "e-mail", "email_address", "address", "recipient_email")
