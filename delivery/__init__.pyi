# The public names of promomail.delivery, for type checkers: written from EXPORTS in
# the __init__.py of promomail.delivery by promomail.pools.lazy_exports.write_stubs(); do not edit.

from promomail.delivery.config import (
    WebhookConfig as WebhookConfig,
)
from promomail.delivery.events import (
    DeliveryError as DeliveryError,
    NotConfigured as NotConfigured,
    SnsUnreachable as SnsUnreachable,
    TopicNotAllowed as TopicNotAllowed,
    UnreadableBody as UnreadableBody,
    Unverified as Unverified,
)
from promomail.delivery.files import (
    import_event_files as import_event_files,
)
from promomail.delivery.message import (
    build_email as build_email,
    sender_address as sender_address,
)
from promomail.delivery.outgoing import (
    read_output as read_output,
)
from promomail.delivery.providers import (
    verify_and_parse as verify_and_parse,
)
from promomail.delivery.send_records import (
    Outcome as Outcome,
    SendSummary as SendSummary,
)
from promomail.delivery.sending import (
    parse_duration as parse_duration,
    send_messages as send_messages,
)
from promomail.pools.relay import (
    relay_from_environment as relay_from_environment,
)

EXPORTS: dict[str, tuple[str, ...]]

__all__ = [
    "DeliveryError",
    "NotConfigured",
    "Outcome",
    "SendSummary",
    "SnsUnreachable",
    "TopicNotAllowed",
    "UnreadableBody",
    "Unverified",
    "WebhookConfig",
    "build_email",
    "import_event_files",
    "parse_duration",
    "read_output",
    "relay_from_environment",
    "send_messages",
    "sender_address",
    "verify_and_parse",
]
