# The public names of templating, for type checkers: written from EXPORTS in
# templating/__init__.py by pools.lazy_exports.write_stubs(); do not edit.

from templating.choices import (
    CHUNK_SIZE as CHUNK_SIZE,
    MAX_WORKERS as MAX_WORKERS,
    OnExhausted as OnExhausted,
    OutputFormat as OutputFormat,
)
from templating.errors import (
    InvalidTemplate as InvalidTemplate,
    MailingError as MailingError,
    PerRecipientFailure as PerRecipientFailure,
    PoolRanOut as PoolRanOut,
    RecipientError as RecipientError,
    RecipientFailed as RecipientFailed,
    RenderLimitExceeded as RenderLimitExceeded,
    UnwritableMessage as UnwritableMessage,
)
from templating.mailing.checking import (
    CheckReport as CheckReport,
    Preview as Preview,
    check_template as check_template,
    preview as preview,
    preview_recipients as preview_recipients,
)
from templating.mailing.isolated import (
    TemplateJobFailed as TemplateJobFailed,
    TemplateProcesses as TemplateProcesses,
)
from templating.mailing.options import (
    parse_chunk_size as parse_chunk_size,
    parse_seconds as parse_seconds,
    parse_shard as parse_shard,
    parse_workers as parse_workers,
)
from templating.mailing.outputs import (
    OutputTarget as OutputTarget,
    RenderedMessage as RenderedMessage,
)
from templating.mailing.recipient_rows import (
    Recipient as Recipient,
)
from templating.mailing.recipients import (
    read_recipients as read_recipients,
)
from templating.mailing.request import (
    RenderCount as RenderCount,
    RenderRequest as RenderRequest,
    RenderSummary as RenderSummary,
)
from templating.mailing.returns import (
    return_listed as return_listed,
)
from templating.mailing.run import (
    render_mailing as render_mailing,
)
from templating.mailing.segment_rows import (
    SegmentRows as SegmentRows,
    segment_rows_file as segment_rows_file,
    write_segment_rows as write_segment_rows,
)
from templating.mailing.setbacks import (
    duplicates_digest as duplicates_digest,
    failed_digest as failed_digest,
    failures_target as failures_target,
    skipped_digest as skipped_digest,
    write_failures as write_failures,
)
from templating.mailing.shards import (
    Shard as Shard,
)
from templating.mailing.sources import (
    PLACEHOLDER as PLACEHOLDER,
)
from templating.template.analysis import (
    TemplateUsage as TemplateUsage,
    analyze as analyze,
)
from templating.template.client import (
    Client as Client,
    CodeSource as CodeSource,
)
from templating.template.environment import (
    MessageEnvironment as MessageEnvironment,
    make_environment as make_environment,
)
from templating.template.message import (
    MessageTemplate as MessageTemplate,
)

EXPORTS: dict[str, tuple[str, ...]]

__all__ = [
    "CHUNK_SIZE",
    "CheckReport",
    "Client",
    "CodeSource",
    "InvalidTemplate",
    "MAX_WORKERS",
    "MailingError",
    "MessageEnvironment",
    "MessageTemplate",
    "OnExhausted",
    "OutputFormat",
    "OutputTarget",
    "PLACEHOLDER",
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
