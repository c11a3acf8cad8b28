"""The Jinja2 side of promomail: templates, the ``client`` object and renders.

Names are imported from their modules on first use (see
:mod:`pools.lazy_exports`): a command that only lists mailings reads
``templating.mailing.outputs`` without loading Jinja2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pools.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from templating.choices import CHUNK_SIZE, MAX_WORKERS, OnExhausted, OutputFormat
    from templating.errors import (
        InvalidTemplate,
        MailingError,
        PerRecipientFailure,
        PoolRanOut,
        RecipientError,
        RecipientFailed,
        RenderLimitExceeded,
        UnwritableMessage,
    )
    from templating.mailing.checking import (
        CheckReport,
        Preview,
        check_template,
        preview,
        preview_recipients,
    )
    from templating.mailing.isolated import TemplateJobFailed, TemplateProcesses
    from templating.mailing.options import (
        parse_chunk_size,
        parse_seconds,
        parse_shard,
        parse_workers,
    )
    from templating.mailing.outputs import OutputTarget, RenderedMessage
    from templating.mailing.recipients import Recipient, Shard, read_recipients
    from templating.mailing.request import RenderCount, RenderRequest, RenderSummary
    from templating.mailing.returns import return_listed
    from templating.mailing.run import render_mailing
    from templating.mailing.segment_rows import SegmentRows, segment_rows_file, write_segment_rows
    from templating.mailing.setbacks import (
        duplicates_digest,
        failed_digest,
        failures_target,
        skipped_digest,
        write_failures,
    )
    from templating.mailing.sources import PLACEHOLDER
    from templating.template.analysis import TemplateUsage, analyze
    from templating.template.client import Client, CodeSource
    from templating.template.environment import MessageEnvironment, make_environment
    from templating.template.message import MessageTemplate

#: Where each public name lives.
_HOMES: dict[str, str] = {
    "TemplateUsage": "templating.template.analysis",
    "analyze": "templating.template.analysis",
    "TemplateJobFailed": "templating.mailing.isolated",
    "TemplateProcesses": "templating.mailing.isolated",
    "CheckReport": "templating.mailing.checking",
    "Preview": "templating.mailing.checking",
    "check_template": "templating.mailing.checking",
    "preview": "templating.mailing.checking",
    "preview_recipients": "templating.mailing.checking",
    "Client": "templating.template.client",
    "CodeSource": "templating.template.client",
    "MessageEnvironment": "templating.template.environment",
    "make_environment": "templating.template.environment",
    "MailingError": "templating.errors",
    "RecipientError": "templating.errors",
    "RenderLimitExceeded": "templating.errors",
    "InvalidTemplate": "templating.errors",
    "RenderRequest": "templating.mailing.request",
    "RenderCount": "templating.mailing.request",
    "RenderSummary": "templating.mailing.request",
    "render_mailing": "templating.mailing.run",
    "MessageTemplate": "templating.template.message",
    "RecipientFailed": "templating.errors",
    "OutputFormat": "templating.choices",
    "OutputTarget": "templating.mailing.outputs",
    "RenderedMessage": "templating.mailing.outputs",
    "Recipient": "templating.mailing.recipients",
    "Shard": "templating.mailing.recipients",
    "read_recipients": "templating.mailing.recipients",
    "parse_chunk_size": "templating.mailing.options",
    "parse_seconds": "templating.mailing.options",
    "parse_shard": "templating.mailing.options",
    "parse_workers": "templating.mailing.options",
    "PLACEHOLDER": "templating.mailing.sources",
    "OnExhausted": "templating.choices",
    "PerRecipientFailure": "templating.errors",
    "PoolRanOut": "templating.errors",
    "UnwritableMessage": "templating.errors",
    "CHUNK_SIZE": "templating.choices",
    "MAX_WORKERS": "templating.choices",
    "return_listed": "templating.mailing.returns",
    "duplicates_digest": "templating.mailing.setbacks",
    "failed_digest": "templating.mailing.setbacks",
    "failures_target": "templating.mailing.setbacks",
    "skipped_digest": "templating.mailing.setbacks",
    "write_failures": "templating.mailing.setbacks",
    "SegmentRows": "templating.mailing.segment_rows",
    "segment_rows_file": "templating.mailing.segment_rows",
    "write_segment_rows": "templating.mailing.segment_rows",
}

if not TYPE_CHECKING:  # type checkers read the imports above instead
    __getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())

__all__ = [
    "CHUNK_SIZE",
    "MAX_WORKERS",
    "PLACEHOLDER",
    "CheckReport",
    "Client",
    "CodeSource",
    "InvalidTemplate",
    "MailingError",
    "MessageEnvironment",
    "MessageTemplate",
    "OnExhausted",
    "OutputFormat",
    "OutputTarget",
    "PerRecipientFailure",
    "PoolRanOut",
    "Preview",
    "Recipient",
    "RecipientError",
    "RecipientFailed",
    "RenderCount",
    "RenderLimitExceeded",
    "RenderRequest",
    "RenderSummary",
    "RenderedMessage",
    "SegmentRows",
    "Shard",
    "TemplateJobFailed",
    "TemplateProcesses",
    "TemplateUsage",
    "UnwritableMessage",
    "analyze",
    "check_template",
    "duplicates_digest",
    "failed_digest",
    "failures_target",
    "make_environment",
    "parse_chunk_size",
    "parse_seconds",
    "parse_shard",
    "parse_workers",
    "preview",
    "preview_recipients",
    "read_recipients",
    "render_mailing",
    "return_listed",
    "segment_rows_file",
    "skipped_digest",
    "write_failures",
    "write_segment_rows",
]
