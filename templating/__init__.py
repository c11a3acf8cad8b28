"""The Jinja2 side of promomail: templates, the ``client`` object and renders.

Names are imported from their modules on first use (see
:mod:`pools.lazy_exports`): a command that only lists mailings reads
``templating.outputs`` without loading Jinja2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pools.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from templating.analysis import TemplateUsage, analyze
    from templating.checking import (
        CheckReport,
        Preview,
        check_template,
        preview,
        preview_recipients,
    )
    from templating.client import Client, CodeSource
    from templating.environment import MessageEnvironment, make_environment
    from templating.errors import MailingError, RecipientError, RenderLimitExceeded, TemplateError
    from templating.mailing import RenderRequest, RenderSummary, render_mailing
    from templating.message import MessageTemplate, RecipientFailed
    from templating.outputs import OutputFormat, OutputTarget, RenderedMessage
    from templating.recipients import Recipient, Shard, read_recipients
    from templating.run_options import (
        parse_chunk_size,
        parse_seconds,
        parse_shard,
        parse_workers,
    )
    from templating.sources import PLACEHOLDER, OnExhausted

#: Where each public name lives.
_HOMES: dict[str, str] = {
    "TemplateUsage": "templating.analysis",
    "analyze": "templating.analysis",
    "CheckReport": "templating.checking",
    "Preview": "templating.checking",
    "check_template": "templating.checking",
    "preview": "templating.checking",
    "preview_recipients": "templating.checking",
    "Client": "templating.client",
    "CodeSource": "templating.client",
    "MessageEnvironment": "templating.environment",
    "make_environment": "templating.environment",
    "MailingError": "templating.errors",
    "RecipientError": "templating.errors",
    "RenderLimitExceeded": "templating.errors",
    "TemplateError": "templating.errors",
    "RenderRequest": "templating.mailing",
    "RenderSummary": "templating.mailing",
    "render_mailing": "templating.mailing",
    "MessageTemplate": "templating.message",
    "RecipientFailed": "templating.message",
    "OutputFormat": "templating.outputs",
    "OutputTarget": "templating.outputs",
    "RenderedMessage": "templating.outputs",
    "Recipient": "templating.recipients",
    "Shard": "templating.recipients",
    "read_recipients": "templating.recipients",
    "parse_chunk_size": "templating.run_options",
    "parse_seconds": "templating.run_options",
    "parse_shard": "templating.run_options",
    "parse_workers": "templating.run_options",
    "PLACEHOLDER": "templating.sources",
    "OnExhausted": "templating.sources",
}

if not TYPE_CHECKING:  # type checkers read the imports above instead
    __getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())

__all__ = [
    "PLACEHOLDER",
    "CheckReport",
    "Client",
    "CodeSource",
    "MailingError",
    "MessageEnvironment",
    "MessageTemplate",
    "OnExhausted",
    "OutputFormat",
    "OutputTarget",
    "Preview",
    "Recipient",
    "RecipientError",
    "RecipientFailed",
    "RenderLimitExceeded",
    "RenderRequest",
    "RenderSummary",
    "RenderedMessage",
    "Shard",
    "TemplateError",
    "TemplateUsage",
    "analyze",
    "check_template",
    "make_environment",
    "parse_chunk_size",
    "parse_seconds",
    "parse_shard",
    "parse_workers",
    "preview",
    "preview_recipients",
    "read_recipients",
    "render_mailing",
]
