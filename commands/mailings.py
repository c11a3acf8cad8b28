"""``promomail render``, ``mailings`` and ``mailing …``: a mailing's runs and records."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from promomail.cli import PromomailGroup
from promomail.commands.errors import CommandFailed, misused_options
from promomail.commands.mailing_reports import (
    print_mailing,
    print_mailings,
    report_render,
    report_return,
)
from promomail.commands.options import pairs, recipients_option, template_argument, var_option
from promomail.commands.output import (
    emit_json,
    json_option,
    plural,
    stdin_is_terminal,
)
from promomail.commands.progress import progress_bar
from promomail.commands.state import get_engine, get_state
from promomail.commands.values import LibraryValue
from promomail.pools.choices import DEFAULT_LEASE_SECONDS, EMAIL_COLUMNS, ID_COLUMNS
from promomail.templating.choices import CHUNK_SIZE, MAX_WORKERS, OnExhausted, OutputFormat

if TYPE_CHECKING:
    from promomail.templating import RenderCount, Shard


# The library's parsers, imported when a value is parsed: declaring the
# options (``--help``, shell completion) imports neither Jinja2 nor the store.
def _workers(text: str) -> int:
    from promomail.templating import parse_workers

    return parse_workers(text)


def _shard(text: str) -> Shard:
    from promomail.templating import parse_shard

    return parse_shard(text)


def _wait(text: str) -> float:
    from promomail.templating import parse_seconds

    return parse_seconds(text, "--wait", allow_zero=True)


def _lease(text: str) -> float:
    from promomail.templating import parse_seconds

    return parse_seconds(text, "the lease", allow_zero=False)


def _chunk_size(text: str) -> int:
    from promomail.templating import parse_chunk_size

    return parse_chunk_size(text)


@click.command("render")
@template_argument
@recipients_option("CSV with an id column, or JSON Lines.", required=True)
@click.option(
    "--mailing",
    "mailing_id",
    required=True,
    metavar="ID",
    help="Mailing id; the same id again resumes or repeats the mailing.",
)
@click.option(
    "--out",
    type=click.Path(),
    metavar="PATH",
    help="Output file (jsonl; stdout when absent) or folder (eml).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice([f.value for f in OutputFormat]),
    default=OutputFormat.JSONL.value,
    show_default=True,
    help="JSON Lines (one object per recipient; --out FILE or stdout) or .eml files (--out DIR).",
)
@click.option(
    "--on-exhausted",
    type=click.Choice([p.value for p in OnExhausted]),
    default=OnExhausted.STOP.value,
    show_default=True,
    help="When a pool runs out: stop, skip the recipient, or render a blank code.",
)
@click.option(
    "--workers",
    type=LibraryValue("N", _workers),
    default=1,
    show_default=True,
    metavar="N",
    help=f"Rendering processes (1 to {MAX_WORKERS}).",
)
@click.option(
    "--shard",
    "shard_slice",
    type=LibraryValue("K/N", _shard),
    metavar="K/N",
    help="Render only shard K of N, 1 ≤ K ≤ N (stable hash of ids).",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=LibraryValue("SECONDS", _wait),
    default=0.0,
    metavar="SECONDS",
    help="When a run of this mailing and shard is in progress, wait up to SECONDS for it "
    "to end instead of refusing at once.",
)
@click.option("--chunk-size", type=LibraryValue("N", _chunk_size), default=CHUNK_SIZE, hidden=True)
@click.option(
    "--lease-seconds",
    type=LibraryValue("SECONDS", _lease),
    default=DEFAULT_LEASE_SECONDS,
    hidden=True,
)
@click.option(
    "--failures",
    "failures_file",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Write every recipient not rendered (failed or skipped), with line and reason, "
    "to FILE: CSV when it ends in .csv, else JSON Lines. The terminal shows a few "
    "examples and a count by reason.",
)
@var_option
@json_option
@click.pass_context
def render(
    ctx: click.Context,
    template: str,
    recipients: str,
    mailing_id: str,
    out: str | None,
    output_format: str,
    on_exhausted: str,
    workers: int,
    shard_slice: Shard | None,
    wait_seconds: float,
    chunk_size: int,
    lease_seconds: float,
    failures_file: str | None,
    variables: tuple[str, ...],
    as_json: bool,
) -> None:
    """Render a mailing, issuing each recipient their codes.

    One run per mailing and shard at a time: another one is refused (or,
    with --wait, waited for) naming the run in progress.
    """
    from promomail.pools import InvalidSetting
    from promomail.templating import OutputTarget, Shard

    fmt = OutputFormat(output_format)
    if as_json and out is None and fmt is OutputFormat.JSONL:
        raise click.UsageError("--json prints the summary on stdout: give --out for the messages")
    # Jinja2 and the render machinery only for a render: ``mailings`` and
    # ``mailing …`` in this module are store commands.
    from promomail.templating import RenderRequest, failures_target, render_mailing

    if failures_file is not None:
        try:
            failures_target(failures_file)
        except InvalidSetting as exc:
            raise misused_options(exc, ctx) from exc

    try:
        # The library knows which targets work (an eml render needs a folder):
        # what it refuses here is a wrong combination of options.
        output = OutputTarget(fmt, Path(out) if out else None)
    except InvalidSetting as exc:
        raise misused_options(exc, ctx) from exc
    request = RenderRequest(
        template_path=template,
        recipients_path=recipients,
        mailing_id=mailing_id,
        db_url=get_state(ctx).url,
        output=output,
        on_exhausted=OnExhausted(on_exhausted),
        workers=workers,
        shard=shard_slice or Shard(),
        variables=pairs(variables, "--var"),
        chunk_size=chunk_size,
        lease_seconds=lease_seconds,
        wait_seconds=wait_seconds,
    )
    # Migrated before the workers start; the render runs on this same engine.
    engine = get_engine(ctx)
    with progress_bar("Rendering", "recipients", note="(reading the recipients)") as bar:

        def counted(count: RenderCount) -> None:
            # A re-run renders every message again (the output holds them all),
            # the earlier recipients with the codes they already have.
            before = count.served_before
            bar.counted(count.recipients, note=f"({before:,} already had codes)" if before else "")

        result = render_mailing(
            request, bar.advance, engine=engine, counted=counted if bar.shown else None
        )
    report_render(result, as_json, failures_file)


@click.command("mailings")
@json_option
@click.pass_context
def mailings(ctx: click.Context, as_json: bool) -> None:
    """Every mailing with its recipients, renders, codes and failures."""
    from promomail.pools import list_mailings

    views = list_mailings(get_engine(ctx, create=False))
    if as_json:
        emit_json([v.as_dict() for v in views])
    else:
        print_mailings(views)


@click.group("mailing", cls=PromomailGroup)
def mailing() -> None:
    """One mailing: show it, give back its undelivered codes, or cancel it."""


@mailing.command("show")
@click.argument("mailing_id", metavar="ID")
@json_option
@click.pass_context
def mailing_show(ctx: click.Context, mailing_id: str, as_json: bool) -> None:
    """A mailing's totals and the runs of its shards."""
    from promomail.pools import show_mailing

    view = show_mailing(get_engine(ctx, create=False), mailing_id)
    if as_json:
        emit_json(view.as_dict())
        return
    print_mailing(view)


_ID_NAMES = ", ".join(ID_COLUMNS)
_EMAIL_NAMES = ", ".join(EMAIL_COLUMNS)


@mailing.command(
    "return",
    help=(
        "Give back the codes mailing ID gave to recipients whose messages were never "
        "delivered (hard bounces, suppressed addresses).\n\n"
        "FILE is a recipients file or a bounce list: CSV with a header, or JSON Lines "
        f"(.jsonl). Each row names a recipient by id (column {_ID_NAMES}) or by e-mail "
        f"address (column {_EMAIL_NAMES}; matched through the mailing's recipients "
        "file). Only single-use codes never redeemed and never shown again by another "
        "mailing go back; the others are kept and counted."
    ),
)
@click.argument("mailing_id", metavar="ID")
@recipients_option(
    "Recipients or bounce list (id or email column).",
    dest="recipients_file",
    required=True,
    exists=False,
)
@click.option("--reason", metavar="TEXT", help="Why, kept with the returned issuances.")
@json_option
@click.pass_context
def mailing_return(
    ctx: click.Context, mailing_id: str, recipients_file: str, reason: str | None, as_json: bool
) -> None:
    from promomail.templating import return_listed

    report_return(
        return_listed(get_engine(ctx), mailing_id, recipients_file, reason=reason), as_json
    )


@mailing.command("cancel")
@click.argument("mailing_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option("--reason", metavar="TEXT", help="Why (default: 'mailing cancelled').")
@json_option
@click.pass_context
def mailing_cancel(
    ctx: click.Context, mailing_id: str, yes: bool, reason: str | None, as_json: bool
) -> None:
    """The mailing was never sent: every code it gave goes back to its pool.

    Only single-use codes never redeemed and never shown again by another
    mailing go back; the others are kept and counted. Asks for confirmation
    on a terminal; without a terminal, --yes is required.
    """
    from promomail.pools import cancel_mailing, show_mailing

    engine = get_engine(ctx)
    if not yes:
        view = show_mailing(engine, mailing_id)
        if not stdin_is_terminal():
            raise CommandFailed(
                f"cancelling mailing {mailing_id!r} gives back its codes: confirm with --yes "
                "(no terminal to ask on)"
            )
        question = (
            f"Mailing {mailing_id} gave {plural(view.codes_issued, 'code')}: give back every "
            "one that can go back to its pool?"
        )
        if not click.confirm(question, err=True):
            raise CommandFailed(f"mailing {mailing_id!r} not cancelled: nothing was changed")
    report_return(cancel_mailing(engine, mailing_id, reason=reason), as_json)
