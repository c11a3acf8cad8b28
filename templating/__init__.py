"""The Jinja2 side of promomail: templates, the ``client`` object and renders."""

from templating.analysis import TemplateUsage, analyze
from templating.checking import CheckReport, Preview, check_template, preview, preview_recipients
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
