"""``promomail codes …`` and ``promomail imports``: loading, generating, listing, voiding."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from promomail.cli import PromomailGroup
from promomail.commands.errors import flags_of
from promomail.commands.options import limit_option
from promomail.commands.output import (
    emit_json,
    json_option,
    note,
    plural,
    print_table,
    say,
    summary,
    warn_low_stock,
)
from promomail.commands.progress import BYTES, progress_bar
from promomail.commands.state import complete_pool_id, get_engine, get_state
from promomail.commands.values import STDIN_NAME
from promomail.pools.choices import (
    DEFAULT_ALPHABET,
    DEFAULT_LENGTH,
    CodeState,
    FileFormat,
    Whitespace,
)

if TYPE_CHECKING:
    from promomail.pools import CodeEntry, ImportRecord, ImportReport, Upload


@click.group(cls=PromomailGroup)
def codes() -> None:
    """Upload, generate, list and void a pool's codes."""


def _uploads(paths: Sequence[str], fmt: str | None) -> list[Upload]:
    """Uploads for the named files; ``-`` is stdin."""
    from promomail.pools import Upload

    return [
        Upload(STDIN_NAME, FileFormat(fmt or FileFormat.TXT), stream=sys.stdin.buffer)
        if name == "-"
        else Upload.from_path(name, fmt)
        for name in paths
    ]


@codes.command("upload")
@click.argument("pool_id", metavar="ID", shell_complete=complete_pool_id)
@click.argument(
    "files",
    metavar="FILE… | -",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in FileFormat]),
    help="File format (default: from the extension; stdin is txt).",
)
@click.option(
    "--whitespace",
    type=click.Choice([w.value for w in Whitespace]),
    default=Whitespace.REJECT.value,
    show_default=True,
    help="Leading/trailing whitespace: an error, trimmed, or part of the code.",
)
@click.option("--skip-invalid", is_flag=True, help="Store the valid lines, report the rest.")
@json_option
@click.pass_context
def codes_upload(
    ctx: click.Context,
    pool_id: str,
    files: tuple[str, ...],
    fmt: str | None,
    whitespace: str,
    skip_invalid: bool,
    as_json: bool,
) -> None:
    """Load codes from FILEs (or - for stdin) into pool ID, all or nothing."""
    from promomail.pools import (
        ImportRejected,
        rejected_report,
        total_size,
        upload_codes,
        uploads_document,
    )

    if files.count("-") > 1:
        raise click.BadParameter("stdin ('-') can be read only once", ctx, param_hint="FILE")
    engine = get_engine(ctx)
    uploads = _uploads(files, fmt)
    started = time.perf_counter()
    try:
        with progress_bar("Uploading", BYTES, total_size(uploads)) as bar:
            reports = upload_codes(
                engine,
                pool_id,
                uploads,
                whitespace=Whitespace(whitespace),
                skip_invalid=skip_invalid,
                progress=bar.advance,
            )
    except ImportRejected as exc:
        if as_json:
            refused = rejected_report(engine, pool_id, exc, fmt, flags_of(ctx.command))
            emit_json(uploads_document([refused], several=len(files) > 1))
            get_state(ctx).problems_reported = True
        raise
    seconds = time.perf_counter() - started
    _report_uploads(reports, as_json)
    accepted = sum(r.accepted for r in reports)
    duplicates = sum(r.duplicates for r in reports)
    rejected = sum(r.rejected_count for r in reports)
    note(
        summary(
            "Uploaded",
            accepted,
            f"{plural(duplicates, 'duplicate')}, {rejected:,} rejected",
            seconds,
            accepted + duplicates,
        )
    )


def _report_uploads(reports: Sequence[ImportReport], as_json: bool) -> None:
    from promomail.pools import uploads_document

    if as_json:
        emit_json(uploads_document(reports, several=len(reports) > 1))
        return
    total = reports[-1].total if reports else 0
    available = reports[-1].available if reports else 0
    for report in reports:
        for problem in report.rejected:
            note(f"{report.source}, line {problem.line}: {problem.reason} (skipped)")
        unlisted = report.rejected_count - len(report.rejected)
        if unlisted > 0:
            note(f"{report.source}: … and {plural(unlisted, 'more invalid line')} (skipped)")
    print_table(
        ("batch", "file", "format", "lines", "accepted", "duplicates", "rejected"),
        (
            (r.batch, r.source, r.format, r.lines, r.accepted, r.duplicates, r.rejected_count)
            for r in reports
        ),
    )
    say(f"The pool now holds {plural(total, 'code')}, {available:,} available.")


@codes.command("generate")
@click.argument("pool_id", metavar="ID", shell_complete=complete_pool_id)
@click.option("--count", type=int, required=True, metavar="N", help="How many codes to make.")
@click.option(
    "--length",
    type=int,
    default=DEFAULT_LENGTH,
    show_default=True,
    metavar="L",
    help="Random characters per code (prefix and check digit not included).",
)
@click.option(
    "--alphabet",
    default=DEFAULT_ALPHABET,
    show_default=True,
    metavar="CHARS",
    help="Characters to draw from (the default leaves out 0/O and 1/I/L).",
)
@click.option("--prefix", default="", metavar="P", help="Text put before every code.")
@click.option("--check-digit", is_flag=True, help="Append a Luhn mod N check character.")
@json_option
@click.pass_context
def codes_generate(
    ctx: click.Context,
    pool_id: str,
    count: int,
    length: int,
    alphabet: str,
    prefix: str,
    check_digit: bool,
    as_json: bool,
) -> None:
    """Add COUNT secure random codes, unique in pool ID."""
    from promomail.pools import CodeSpec, generate_codes

    spec = CodeSpec(length=length, alphabet=alphabet, prefix=prefix, check_digit=check_digit)
    engine = get_engine(ctx)
    started = time.perf_counter()
    with progress_bar("Generating", "codes", count) as bar:
        report = generate_codes(engine, pool_id, count, spec, bar.advance)
    seconds = time.perf_counter() - started
    if as_json:
        emit_json(asdict(report))
    else:
        say(
            f"Generated {plural(report.generated, 'code')} in batch {report.batch}; "
            f"pool {pool_id} now holds {plural(report.total, 'code')}, "
            f"{report.available:,} available."
        )
    note(summary("Generated", report.generated, "", seconds, report.generated))


CODE_COLUMNS = ("code", "state", "customer", "mailing", "issued (UTC)", "redeemed (UTC)", "batch")


def _code_row(entry: CodeEntry) -> tuple[Any, ...]:
    return (
        entry.code,
        entry.state,
        entry.customer,
        entry.mailing,
        entry.issued_at,
        entry.redeemed_at,
        entry.batch,
    )


@codes.command("list")
@click.argument("pool_id", metavar="ID", shell_complete=complete_pool_id)
@click.option(
    "--state",
    type=click.Choice([s.value for s in CodeState]),
    help="Only codes in this state.",
)
@limit_option("At most N codes; 0 lists them all.", default=100, minimum=0)
@json_option
@click.pass_context
def codes_list(
    ctx: click.Context, pool_id: str, state: str | None, limit: int, as_json: bool
) -> None:
    """A pool's codes with state, customer and times (one JSON array with --json)."""
    from promomail.pools import list_codes

    entries = list_codes(
        get_engine(ctx, create=False),
        pool_id,
        state=CodeState(state) if state else None,
        limit=limit or None,
    )
    if as_json:
        emit_json([entry.as_dict() for entry in entries])
        return
    print_table(CODE_COLUMNS, (_code_row(e) for e in entries), empty="(no codes)")
    if limit and len(entries) == limit:
        note(f"Showing the first {plural(limit, 'code')}; --limit 0 lists them all.")


@codes.command("void")
@click.argument("pool_id", metavar="ID", shell_complete=complete_pool_id)
@click.option("--batch", "batch_id", type=int, required=True, metavar="B", help="Import batch.")
@json_option
@click.pass_context
def codes_void(ctx: click.Context, pool_id: str, batch_id: int, as_json: bool) -> None:
    """Withdraw an upload: batch B's never-issued codes become void."""
    from promomail.pools import void_batch

    report = void_batch(get_engine(ctx), pool_id, batch_id)
    if as_json:
        emit_json(report.as_dict())
    else:
        say(
            f"Voided {plural(report.voided, 'code')} of batch {report.batch} in pool "
            f"{report.pool}; kept {plural(report.kept_issued, 'already issued code')}."
        )
    warn_low_stock(report.low_stock)


IMPORT_COLUMNS = (
    "batch",
    "file",
    "format",
    "accepted",
    "duplicates",
    "rejected",
    "when (UTC)",
    "voided",
)


def print_imports(history: Sequence[ImportRecord]) -> None:
    print_table(
        IMPORT_COLUMNS,
        (
            (
                r.batch,
                r.file,
                r.format,
                r.accepted,
                r.duplicates,
                r.rejected,
                r.created_at.replace("T", " "),
                r.voided_at.replace("T", " ") if r.voided_at else None,
            )
            for r in history
        ),
        empty="(no imports)",
    )


@click.command("imports")
@click.argument("pool_id", metavar="ID", shell_complete=complete_pool_id)
@json_option
@click.pass_context
def imports(ctx: click.Context, pool_id: str, as_json: bool) -> None:
    """A pool's import history: batch, file, format, counts, when."""
    from promomail.pools import import_history

    history = import_history(get_engine(ctx, create=False), pool_id)
    if as_json:
        emit_json([asdict(record) for record in history])
    else:
        print_imports(history)
