"""The Jinja2 side of promomail: templates, the ``client`` object and renders.

Names are imported from their modules on first use (see
:mod:`pools.lazy_exports`): a command that only lists mailings reads
``templating.mailing.outputs`` without loading Jinja2.
"""

from __future__ import annotations

from promomail.pools.lazy_exports import lazy_exports

#: Every public name, by the module it lives in: the one table. Public means
#: used by another package or a front end; the rest stays internal (tests
#: import it from its module). ``__all__``,
#: the lookup on first use and the type checkers' stub
#: (``templating/__init__.pyi``, written by ``promomail.pools.lazy_exports.write_stubs()``)
#: are made from it.
EXPORTS: dict[str, tuple[str, ...]] = {
    "promomail.templating.choices": ("CHUNK_SIZE", "MAX_WORKERS", "OnExhausted", "OutputFormat"),
    "promomail.templating.errors": ("InvalidTemplate", "RecipientError", "RenderLimitExceeded"),
    "promomail.templating.mailing.checking": (
        "CheckReport",
        "Preview",
        "check_template",
        "preview",
        "preview_recipients",
    ),
    "promomail.templating.mailing.isolated": ("TemplateProcesses",),
    "promomail.templating.mailing.options": (
        "parse_chunk_size",
        "parse_seconds",
        "parse_shard",
        "parse_workers",
    ),
    "promomail.templating.mailing.outputs": ("OutputTarget",),
    "promomail.templating.mailing.recipient_rows": ("Recipient",),
    "promomail.templating.mailing.recipients": ("read_recipients",),
    "promomail.templating.mailing.request": ("RenderCount", "RenderRequest", "RenderSummary"),
    "promomail.templating.mailing.returns": ("return_listed",),
    "promomail.templating.mailing.run": ("render_mailing",),
    "promomail.templating.mailing.segment_rows": ("segment_rows_file", "write_segment_rows"),
    "promomail.templating.mailing.setbacks": (
        "duplicates_digest",
        "failed_digest",
        "failures_target",
        "skipped_digest",
        "write_failures",
    ),
    "promomail.templating.mailing.shards": ("Shard",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, EXPORTS, globals())
