"""After the render: the delivery events of e-mail services, verified and parsed.

Each service's webhook (:mod:`delivery.ses`, :mod:`delivery.sendgrid`,
:mod:`delivery.mailgun`, :mod:`delivery.postmark`, :mod:`delivery.own`) and
bounce files (:mod:`delivery.files`, :mod:`delivery.dsn`) become
:class:`DeliveryEvent` values; the store applies them. Depends on
:mod:`pools` only, never on :mod:`templating`.

Names are imported from their modules on first use (see
:mod:`pools.lazy_exports`): a command that imports a bounce file does not
load the cryptography the webhooks need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pools.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from delivery.config import DEFAULT_SNS_CERT_URL, WebhookConfig
    from delivery.events import (
        DeliveryError,
        DeliveryEvent,
        EventBatch,
        EventType,
        MalformedEvent,
        NotConfigured,
        SnsUnreachable,
        TopicNotAllowed,
        Unverified,
        is_valid_ref,
    )
    from delivery.files import EventProblem, read_event_files
    from delivery.providers import WEBHOOK_PROVIDERS, verify_and_parse
    from delivery.ses import FetchFailed, HttpFetcher, SnsEndpoint

_HOMES: dict[str, str] = {
    "DEFAULT_SNS_CERT_URL": "delivery.config",
    "WebhookConfig": "delivery.config",
    "DeliveryError": "delivery.events",
    "DeliveryEvent": "delivery.events",
    "EventBatch": "delivery.events",
    "EventType": "delivery.events",
    "MalformedEvent": "delivery.events",
    "NotConfigured": "delivery.events",
    "SnsUnreachable": "delivery.events",
    "TopicNotAllowed": "delivery.events",
    "Unverified": "delivery.events",
    "is_valid_ref": "delivery.events",
    "EventProblem": "delivery.files",
    "read_event_files": "delivery.files",
    "WEBHOOK_PROVIDERS": "delivery.providers",
    "verify_and_parse": "delivery.providers",
    "FetchFailed": "delivery.ses",
    "HttpFetcher": "delivery.ses",
    "SnsEndpoint": "delivery.ses",
}

if not TYPE_CHECKING:  # type checkers read the imports above instead
    __getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())

__all__ = [
    "DEFAULT_SNS_CERT_URL",
    "WEBHOOK_PROVIDERS",
    "DeliveryError",
    "DeliveryEvent",
    "EventBatch",
    "EventProblem",
    "EventType",
    "FetchFailed",
    "HttpFetcher",
    "MalformedEvent",
    "NotConfigured",
    "SnsEndpoint",
    "SnsUnreachable",
    "TopicNotAllowed",
    "Unverified",
    "WebhookConfig",
    "is_valid_ref",
    "read_event_files",
    "verify_and_parse",
]
