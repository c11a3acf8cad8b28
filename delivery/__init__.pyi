# The public names of delivery, for type checkers: written from EXPORTS in
# delivery/__init__.py by pools.lazy_exports.write_stubs(); do not edit.

from delivery.config import (
    DEFAULT_SNS_CERT_URL as DEFAULT_SNS_CERT_URL,
    WebhookConfig as WebhookConfig,
)
from delivery.events import (
    DeliveryError as DeliveryError,
    DeliveryEvent as DeliveryEvent,
    EventBatch as EventBatch,
    EventType as EventType,
    MalformedEvent as MalformedEvent,
    NotConfigured as NotConfigured,
    SnsUnreachable as SnsUnreachable,
    TopicNotAllowed as TopicNotAllowed,
    UnreadableBody as UnreadableBody,
    Unverified as Unverified,
    is_valid_ref as is_valid_ref,
)
from delivery.files import (
    EventImport as EventImport,
    EventProblem as EventProblem,
    import_event_files as import_event_files,
    read_event_files as read_event_files,
)
from delivery.message import (
    build_email as build_email,
    ref_headers as ref_headers,
    sender_address as sender_address,
)
from delivery.outgoing import (
    OutgoingError as OutgoingError,
    OutgoingMessage as OutgoingMessage,
    RenderOutput as RenderOutput,
    read_output as read_output,
)
from delivery.providers import (
    WEBHOOK_PROVIDERS as WEBHOOK_PROVIDERS,
    verify_and_parse as verify_and_parse,
)
from delivery.send_records import (
    MemoryLog as MemoryLog,
    Outcome as Outcome,
    SendAborted as SendAborted,
    SendLog as SendLog,
    SendState as SendState,
    SendSummary as SendSummary,
)
from delivery.sending import (
    parse_duration as parse_duration,
    send_messages as send_messages,
)
from delivery.ses import (
    FetchFailed as FetchFailed,
    HttpFetcher as HttpFetcher,
    SnsEndpoint as SnsEndpoint,
)
from pools.relay import (
    RelayError as RelayError,
    RelayRefusedLogin as RelayRefusedLogin,
    SmtpRelay as SmtpRelay,
    relay_from_environment as relay_from_environment,
)

EXPORTS: dict[str, tuple[str, ...]]

__all__ = [
    "DEFAULT_SNS_CERT_URL",
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
    "WEBHOOK_PROVIDERS",
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
