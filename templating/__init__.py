"""The Jinja2 side of promomail: templates, the ``client`` object and renders.

Names are imported from their modules on first use (see
:mod:`pools.lazy_exports`): a command that only lists mailings reads
``templating.mailing.outputs`` without loading Jinja2.
"""

from __future__ import annotations

from pools.lazy_exports import lazy_exports

#: Every public name, by the module it lives in: the one table. ``__all__``,
#: the lookup on first use and the type checkers' stub
#: (``templating/__init__.pyi``, written by ``pools.lazy_exports.write_stubs()``)
#: are made from it.
EXPORTS: dict[str, tuple[str, ...]] = {
    "templating.choices": ("CHUNK_SIZE", "MAX_WORKERS", "OnExhausted", "OutputFormat"),
    "templating.errors": (
        "InvalidTemplate",
        "MailingError",
        "PerRecipientFailure",
        "PoolRanOut",
        "RecipientError",
        "RecipientFailed",
        "RenderLimitExceeded",
        "UnwritableMessage",
    ),
    "templating.mailing.checking": (
        "CheckReport",
        "Preview",
        "check_template",
        "preview",
        "preview_recipients",
    ),
    "templating.mailing.isolated": ("TemplateJobFailed", "TemplateProcesses"),
    "templating.mailing.options": (
        "parse_chunk_size",
        "parse_seconds",
        "parse_shard",
        "parse_workers",
    ),
    "templating.mailing.outputs": ("OutputTarget", "RenderedMessage"),
    "templating.mailing.recipient_rows": ("Recipient",),
    "templating.mailing.recipients": ("read_recipients",),
    "templating.mailing.request": ("RenderCount", "RenderRequest", "RenderSummary"),
    "templating.mailing.returns": ("return_listed",),
    "templating.mailing.run": ("render_mailing",),
    "templating.mailing.segment_rows": ("SegmentRows", "segment_rows_file", "write_segment_rows"),
    "templating.mailing.setbacks": (
        "duplicates_digest",
        "failed_digest",
        "failures_target",
        "skipped_digest",
        "write_failures",
    ),
    "templating.mailing.shards": ("Shard",),
    "templating.mailing.sources": ("PLACEHOLDER",),
    "templating.template.analysis": ("TemplateUsage", "analyze"),
    "templating.template.client": ("Client", "CodeSource"),
    "templating.template.environment": ("MessageEnvironment", "make_environment"),
    "templating.template.message": ("MessageTemplate",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, EXPORTS, globals())
