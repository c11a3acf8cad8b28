"""After sending: ``customer``, ``segment``, ``redeem``, ``unredeem``, ``export``.

The commands a checkout or a CRM script runs, often once per code: the
modules of ``customer`` and ``export`` are imported inside them, so that a
``redeem`` loads the redemption module and not the reports beside it.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import click

from promomail.cli import PromomailGroup
from promomail.commands.errors import CommandFailed, misused_options
from promomail.commands.options import pool_choice_option, recipients_option
from promomail.commands.output import (
    answered_as_json,
    emit_json,
    json_option,
    note,
    plural,
    print_table,
    say,
)
from promomail.commands.state import complete_pool_id, get_engine
from promomail.commands.values import LibraryValue
from promomail.pools.choices import SegmentFormat

if TYPE_CHECKING:
    from promomail.pools import SegmentFilters


@click.command("customer")
@click.argument("customer_id", metavar="ID")
@json_option
@click.pass_context
def customer(ctx: click.Context, customer_id: str, as_json: bool) -> None:
    """Every code issued to a customer, and the redemptions of their codes."""
    from promomail.pools import customer_history  # not loaded for a redeem

    history = customer_history(get_engine(ctx, create=False), customer_id)
    if as_json:
        emit_json(history.as_dict())
        return
    if not history.known:
        say(f"No codes were ever issued to or redeemed by customer {customer_id!r}.")
        return
    say(f"Codes of customer {customer_id}:")
    # The returned column only when something came back: most histories have none.
    any_returned = any(i.returned_at is not None for i in history.issuances)
    print_table(
        ["pool", "code", "kind", "mailing", "issued", "redeemed by"]
        + (["returned"] if any_returned else []),
        [
            (
                i.pool,
                i.code,
                i.kind,
                i.mailing,
                i.issued_at,
                ", ".join(r or "(anonymous)" for r in i.redeemed_by) or None,
            )
            + ((_returned_cell(i.returned_at, i.return_reason),) if any_returned else ())
            for i in history.issuances
        ],
    )
    if history.redemptions:
        say()
        say("Redemptions:")
        print_table(
            ["pool", "code", "issued to", "redeemed by", "order", "when", "mailing", "rolled back"],
            [
                (
                    r.pool,
                    r.code,
                    r.issued_to,
                    r.redeemed_by,
                    r.order,
                    r.redeemed_at,
                    r.mailing,
                    r.rolled_back_at,
                )
                for r in history.redemptions
            ],
        )


def _returned_cell(returned_at: datetime | None, reason: str | None) -> str | None:
    if returned_at is None:
        return None
    shown = returned_at.isoformat(sep=" ", timespec="seconds")
    return f"{shown} ({reason})" if reason else shown


def _duration(text: str) -> timedelta:
    from promomail.pools import parse_expiring_within

    return parse_expiring_within(text)


@click.command("segment")
@click.option(
    "--issued-from",
    multiple=True,
    metavar="POOL",
    shell_complete=complete_pool_id,
    help="Count codes from this pool (repeat; default: every pool).",
)
@click.option(
    "--unredeemed-from",
    multiple=True,
    metavar="POOL",
    shell_complete=complete_pool_id,
    help="Customers still holding a usable code from this pool (issued, not returned, "
    "not redeemed, not expired): the code last_promocode shows them.",
)
@click.option(
    "--expiring-within",
    type=LibraryValue("DURATION", _duration),
    metavar="DURATION",
    help="With --unredeemed-from: only codes expiring within DURATION from now (36h, 7d, 2w).",
)
@click.option(
    "--min-issued",
    type=click.IntRange(min=0),
    metavar="N",
    help="Customers given at least N codes (default 1; 0 with --max-issued 0).",
)
@click.option(
    "--max-issued", type=click.IntRange(min=0), metavar="N", help="Customers given at most N codes."
)
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    metavar="DATE",
    help="Count only codes issued at or after DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, UTC).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice([f.value for f in SegmentFormat]),
    help="ids: one id a line (the default); csv: with the header id. Not with --recipients.",
)
@recipients_option(
    "Print the rows of this recipients file whose id is in the segment, every column "
    "as written, in the file's own format: the recipients of a follow-up mailing.",
    dest="recipients_file",
    exists=False,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="With --recipients: write the rows to FILE, which appears only once complete.",
)
@json_option
@click.pass_context
def segment_command(
    ctx: click.Context,
    issued_from: tuple[str, ...],
    unredeemed_from: tuple[str, ...],
    expiring_within: timedelta | None,
    min_issued: int | None,
    max_issued: int | None,
    since: datetime | None,
    output_format: str | None,
    recipients_file: str | None,
    out: str | None,
    as_json: bool,
) -> None:
    """Customers by the codes they were issued or still hold; usable as --recipients.

    With --unredeemed-from, a reminder segment: the customers whose code from
    the pool can still be used, to be shown it again with
    client.last_promocode('POOL').
    """
    from promomail.pools import SegmentError, SegmentFilters, segment, write_segment

    try:
        filters = SegmentFilters(
            issued_from, min_issued, max_issued, since, unredeemed_from, expiring_within
        )
    except SegmentError as exc:
        if exc.settings == ("expiring_within", "unredeemed_from"):
            raise misused_options(exc, ctx) from exc
        raise
    if recipients_file is not None:
        _segment_rows(ctx, filters, recipients_file, out, output_format, as_json)
        return
    if out is not None:
        raise click.UsageError("--out goes with --recipients (ids are printed)", ctx)
    ids = segment(
        get_engine(ctx, create=False),
        issued_from=filters.issued_from,
        min_issued=filters.min_issued,
        max_issued=filters.max_issued,
        since=filters.since,
        unredeemed_from=filters.unredeemed_from,
        expiring_within=filters.expiring_within,
    )
    if as_json:
        emit_json({"count": len(ids), "ids": ids})
        return
    write_segment(ids, sys.stdout, SegmentFormat(output_format or SegmentFormat.IDS.value))
    note(f"{plural(len(ids), 'customer')} in the segment")


def _segment_rows(
    ctx: click.Context,
    filters: SegmentFilters,
    recipients_file: str,
    out: str | None,
    output_format: str | None,
    as_json: bool,
) -> None:
    from promomail.templating import segment_rows_file, write_segment_rows  # not loaded for ids

    if output_format is not None:
        raise click.UsageError(
            "--format does not go with --recipients: the rows keep the file's own format", ctx
        )
    if as_json and out is None:
        raise click.UsageError("--json prints the summary on stdout: give --out for the rows", ctx)
    engine = get_engine(ctx, create=False)
    if out is None:
        # The bytes as the file has them, whatever the terminal's encoding.
        report = write_segment_rows(engine, recipients_file, filters, sys.stdout.buffer)
    else:
        report = segment_rows_file(engine, recipients_file, filters, out)
    if as_json:
        emit_json(report.as_dict())
        return
    where = f" to {out}" if out is not None else ""
    note(
        f"{report.rows} of {plural(report.recipients, 'recipient')} of {recipients_file} "
        f"in the segment{where}"
    )


@click.command("redeem")
@click.argument("code")
@click.option("--customer", "customer_id", metavar="C", help="Who is redeeming (e.g. a friend).")
@click.option("--order", metavar="O", help="The order the code is used for.")
@pool_choice_option()
@click.option(
    "--dry-run", is_flag=True, help="Only answer whether it would redeem now; change nothing."
)
@json_option
@click.pass_context
def redeem_command(
    ctx: click.Context,
    code: str,
    customer_id: str | None,
    order: str | None,
    pool_id: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Redeem a code at checkout; exit 1 with the reason when refused.

    Again with the same --order as an earlier successful redemption, the
    same success is answered ("replayed") and nothing new is recorded.
    """
    from promomail.pools import redeem

    result = redeem(
        get_engine(ctx), code, customer=customer_id, order=order, pool=pool_id, dry_run=dry_run
    )
    if answered_as_json(ctx, result, as_json):
        return
    if not result.ok:
        would = "would be refused" if dry_run else "refused"
        raise CommandFailed(f"code {code!r} {would}: {result.reason}")
    issued = f"issued to {result.issued_to}" if result.issued_to else "never issued"
    if result.mailing:
        issued += f" by mailing {result.mailing}"
    by = f", redeemed by {result.redeemed_by}" if result.redeemed_by else ""
    order_text = f", order {result.order}" if result.order else ""
    if result.replayed:
        verb = "Already redeemed (replayed)"
    else:
        verb = "Would redeem" if dry_run else "Redeemed"
    say(f"{verb} {result.code} from pool {result.pool} ({issued}{by}{order_text}).")


@click.command("unredeem")
@click.argument("code")
@click.option(
    "--order",
    metavar="O",
    help="The cancelled or refunded order. Leave it out to undo the code's one "
    "redemption made without an order.",
)
@pool_choice_option()
@json_option
@click.pass_context
def unredeem_command(
    ctx: click.Context, code: str, order: str | None, pool_id: str | None, as_json: bool
) -> None:
    """Undo the redemption of CODE by an order that was cancelled or refunded.

    A single-use code can then be redeemed again; a multi-use code's count
    drops by one. The redemption stays in the history, marked rolled back.
    Without --order, the code's one live redemption made without an order is
    undone (refused when there is none, or more than one).
    """
    from promomail.pools import unredeem

    result = unredeem(get_engine(ctx), code, order=order, pool=pool_id)
    if as_json:
        emit_json(result.as_dict())
        return
    by = f"by order {result.order}" if result.order is not None else "made without an order"
    say(
        f"Rolled back the redemption of {result.code} (pool {result.pool}) {by}; "
        f"{plural(result.redemptions, 'redemption')} left."
    )


@click.group("export", cls=PromomailGroup)
def export() -> None:
    """Export records as files."""


@export.command("issuances")
@click.option(
    "--pool", "pool_id", metavar="P", shell_complete=complete_pool_id, help="Only this pool."
)
@click.option("--mailing", "mailing_id", metavar="M", help="Only this mailing.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    required=True,
    metavar="FILE.csv",
    help="The CSV file to write (replaced whole, never half-written).",
)
@json_option
@click.pass_context
def export_issuances_command(
    ctx: click.Context, pool_id: str | None, mailing_id: str | None, out: str, as_json: bool
) -> None:
    """The issuance log (who got which code, when) as CSV."""
    from promomail.pools import export_issuances  # not loaded for a redeem

    rows = export_issuances(get_engine(ctx, create=False), out, pool=pool_id, mailing=mailing_id)
    if as_json:
        emit_json({"file": out, "rows": rows})
    else:
        say(f"Wrote {plural(rows, 'issuance')} to {out}.")
