"""After the render: sending its messages through an SMTP relay, and hearing back.

:mod:`delivery.sending` sends a render's output (:mod:`delivery.outgoing`)
through an SMTP relay; each service's webhook (:mod:`delivery.ses`,
:mod:`delivery.sendgrid`, :mod:`delivery.mailgun`, :mod:`delivery.postmark`,
:mod:`delivery.own`) and bounce files (:mod:`delivery.files`,
:mod:`delivery.dsn`) become :class:`DeliveryEvent` values; the store applies
them. Depends on :mod:`pools` alone: it reads the render's output files,
never ``templating``'s internals.

Names are imported from their modules on first use (see
:mod:`pools.lazy_exports`): the render's ``.eml`` writer, which uses
:mod:`delivery.message`, loads no SMTP client, and a command that imports a
bounce file does not load the cryptography the webhooks need.
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
        UnreadableBody,
        Unverified,
        is_valid_ref,
    )
    from delivery.files import EventImport, EventProblem, import_event_files, read_event_files
    from delivery.message import build_email, ref_headers, sender_address
    from delivery.outgoing import OutgoingError, OutgoingMessage, RenderOutput, read_output
    from delivery.providers import WEBHOOK_PROVIDERS, verify_and_parse
    from delivery.sending import (
        MemoryLog,
        Outcome,
        SendAborted,
        SendLog,
        SendState,
        SendSummary,
        parse_duration,
        send_messages,
    )
    from delivery.ses import FetchFailed, HttpFetcher, SnsEndpoint
    from pools.relay import RelayError, RelayRefusedLogin, SmtpRelay, relay_from_environment

#: Where each public name lives.
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
    "UnreadableBody": "delivery.events",
    "Unverified": "delivery.events",
    "is_valid_ref": "delivery.events",
    "EventImport": "delivery.files",
    "EventProblem": "delivery.files",
    "import_event_files": "delivery.files",
    "read_event_files": "delivery.files",
    "WEBHOOK_PROVIDERS": "delivery.providers",
    "verify_and_parse": "delivery.providers",
    "FetchFailed": "delivery.ses",
    "HttpFetcher": "delivery.ses",
    "SnsEndpoint": "delivery.ses",
    "build_email": "delivery.message",
    "ref_headers": "delivery.message",
    "sender_address": "delivery.message",
    "OutgoingError": "delivery.outgoing",
    "OutgoingMessage": "delivery.outgoing",
    "RenderOutput": "delivery.outgoing",
    "read_output": "delivery.outgoing",
    "MemoryLog": "delivery.sending",
    "Outcome": "delivery.sending",
    "SendAborted": "delivery.sending",
    "SendLog": "delivery.sending",
    "SendState": "delivery.sending",
    "SendSummary": "delivery.sending",
    "send_messages": "delivery.sending",
    "parse_duration": "delivery.sending",
    # The relay's URL and session live in pools, which low-stock notices share.
    "RelayError": "pools.relay",
    "RelayRefusedLogin": "pools.relay",
    "SmtpRelay": "pools.relay",
    "relay_from_environment": "pools.relay",
}

if not TYPE_CHECKING:  # type checkers read the imports above instead
    __getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())

__all__ = [
    "DEFAULT_SNS_CERT_URL",
    "WEBHOOK_PROVIDERS",
    "DeliveryError",
    "DeliveryEvent",
    "EventBatch",
    "EventImport",
    "EventProblem",
    "EventType",
    "FetchFailed",
    "HttpFetcher",
    "MalformedEvent",
    "MemoryLog",
    "NotConfigured",
    "Outcome",
    "OutgoingError",
    "OutgoingMessage",
    "RelayError",
    "RelayRefusedLogin",
    "RenderOutput",
    "SendAborted",
    "SendLog",
    "SendState",
    "SendSummary",
    "SmtpRelay",
    "SnsEndpoint",
    "SnsUnreachable",
    "TopicNotAllowed",
    "UnreadableBody",
    "Unverified",
    "WebhookConfig",
    "build_email",
    "import_event_files",
    "is_valid_ref",
    "parse_duration",
    "read_event_files",
    "read_output",
    "ref_headers",
    "relay_from_environment",
    "send_messages",
    "sender_address",
    "verify_and_parse",
]
