"""After the render: sending its messages through an SMTP relay, and hearing back.

Depends on :mod:`pools` alone: it reads the render's output files, never
``templating``'s internals. Names are imported from their modules on first
use (see :mod:`pools.lazy_exports`), so the render's ``.eml`` writer, which
uses :mod:`delivery.message`, loads no SMTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pools.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from delivery.message import build_email, ref_headers, sender_address
    from delivery.outgoing import OutgoingError, OutgoingMessage, RenderOutput, read_output
    from delivery.sending import (
        MemoryLog,
        Outcome,
        SendAborted,
        SendLog,
        SendState,
        SendSummary,
        send_messages,
    )
    from pools.relay import RelayError, RelayRefusedLogin, SmtpRelay, relay_from_environment

#: Where each public name lives.
_HOMES = {
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
    # The relay's URL and session live in pools, which low-stock notices share.
    "RelayError": "pools.relay",
    "RelayRefusedLogin": "pools.relay",
    "SmtpRelay": "pools.relay",
    "relay_from_environment": "pools.relay",
}

if not TYPE_CHECKING:  # type checkers read the imports above instead
    __getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())

__all__ = [
    "MemoryLog",
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
    "build_email",
    "read_output",
    "ref_headers",
    "relay_from_environment",
    "send_messages",
    "sender_address",
]
