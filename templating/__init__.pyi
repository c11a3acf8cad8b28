# The public names of promomail.templating, for type checkers: written from EXPORTS in
# the __init__.py of promomail.templating by promomail.pools.lazy_exports.write_stubs(); do not edit.

from promomail.templating.choices import (
    CHUNK_SIZE as CHUNK_SIZE,
    MAX_WORKERS as MAX_WORKERS,
    OnExhausted as OnExhausted,
    OutputFormat as OutputFormat,
)
from promomail.templating.errors import (
    InvalidTemplate as InvalidTemplate,
    RecipientError as RecipientError,
    RenderLimitExceeded as RenderLimitExceeded,
)
from promomail.templating.mailing.checking import (
    CheckReport as CheckReport,
    Preview as Preview,
    check_template as check_template,
    preview as preview,
    preview_recipients as preview_recipients,
)
from promomail.templating.mailing.isolated import (
    TemplateProcesses as TemplateProcesses,
)
from promomail.templating.mailing.options import (
    parse_chunk_size as parse_chunk_size,
    parse_seconds as parse_seconds,
    parse_shard as parse_shard,
    parse_workers as parse_workers,
)
from promomail.templating.mailing.outputs import (
    OutputTarget as OutputTarget,
)
from promomail.templating.mailing.recipient_rows import (
    Recipient as Recipient,
)
from promomail.templating.mailing.recipients import (
    read_recipients as read_recipients,
)
from promomail.templating.mailing.request import (
    RenderCount as RenderCount,
    RenderRequest as RenderRequest,
    RenderSummary as RenderSummary,
)
from promomail.templating.mailing.returns import (
    return_listed as return_listed,
)
from promomail.templating.mailing.run import (
    render_mailing as render_mailing,
)
from promomail.templating.mailing.segment_rows import (
    segment_rows_file as segment_rows_file,
    write_segment_rows as write_segment_rows,
)
from promomail.templating.mailing.setbacks import (
    duplicates_digest as duplicates_digest,
    failed_digest as failed_digest,
    failures_target as failures_target,
    skipped_digest as skipped_digest,
    write_failures as write_failures,
)
from promomail.templating.mailing.shards import (
    Shard as Shard,
)

EXPORTS: dict[str, tuple[str, ...]]

__all__ = [
    "CHUNK_SIZE",
    "CheckReport",
    "InvalidTemplate",
    "MAX_WORKERS",
    "OnExhausted",
    "OutputFormat",
    "OutputTarget",
    "Preview",
    "Recipient",
    "RecipientError",
    "RenderCount",
    "RenderLimitExceeded",
    "RenderRequest",
    "RenderSummary",
    "Shard",
    "TemplateProcesses",
    "check_template",
    "duplicates_digest",
    "failed_digest",
    "failures_target",
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
