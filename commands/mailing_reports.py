"""What the mailing commands print: a render's summary, the list of mailings,
one mailing's totals and runs, and the report of codes given back."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from promomail.commands.errors import CommandFailed
from promomail.commands.output import (
    emit_json,
    note,
    plural,
    print_fields,
    print_table,
    round_rate,
    say,
    warn_low_stock,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promomail.pools import MailingView, ReturnReport
    from promomail.templating import RenderSummary


def report_render(result: RenderSummary, as_json: bool, failures_file: str | None) -> None:
    from promomail.templating import (
        duplicates_digest,
        failed_digest,
        skipped_digest,
        write_failures,
    )

    if as_json:
        emit_json(result.as_dict())
    warn_low_stock(result.low_stock)
    if result.took_over:
        note(f"Took over from the earlier run ({result.took_over}), which had stopped.")
    repeated = duplicates_digest(result.duplicates, result.recipients_file)
    failed = failed_digest(result.totals.failures)
    skipped = skipped_digest(result.totals.skips)
    for digest, noun in ((repeated, "ids repeated"), (failed, "failed"), (skipped, "skipped")):
        for line in digest.lines(noun):
            note(line)
    if not as_json and not repeated.whole:
        note("Every repeated id with both its lines: --json.")
    if not as_json and failures_file is None and not (failed.whole and skipped.whole):
        note("Every recipient not rendered, with its line and reason: --failures FILE, or --json.")
    shown = f"{result.seconds:.1f}" if result.seconds >= 1 else f"{result.seconds:.2f}"
    note(
        f"Mailing {result.mailing} ({result.shard}): {result.totals.recipients:,} recipients, "
        f"{result.totals.rendered:,} rendered, {result.totals.new_codes:,} new codes, "
        f"{result.totals.reused_codes:,} reused, {len(result.totals.skips):,} skipped, "
        f"{len(result.totals.failures):,} failed in {shown} s — {round_rate(result.rate):,} recipients/s"
    )
    if result.output != "-":
        note(f"Output: {result.output}")
    if failures_file is not None:
        # After the summary, which a file that cannot be written must not take away.
        write_failures(failures_file, result.totals.failures, result.totals.skips)
    if result.totals.interrupted:
        raise CommandFailed(
            f"interrupted: {plural(result.totals.rendered, 'recipient')} rendered and recorded; run the same "
            "command again to resume"
        )
    if result.totals.stopped_at_pool:
        raise CommandFailed(
            f"pool {result.totals.stopped_at_pool!r} ran out of codes: stopped after "
            f"{plural(result.totals.rendered, 'recipient')}, all recorded; add codes and run the same "
            "command again to continue"
        )
    if result.totals.failures:
        raise CommandFailed(
            f"{plural(len(result.totals.failures), 'recipient')} could not be rendered"
        )


def _mailing_row(view: MailingView) -> tuple[Any, ...]:
    t = view.totals
    return (
        view.id,
        view.status_text,
        t.recipients,
        t.rendered,
        view.codes_issued,
        t.failed,
        view.started_at,
        view.finished_at,
        view.redeemed,
        f"{view.redemption_rate:.1%}",
        *_delivery_cells(view),
    )


def _delivery_cells(view: MailingView) -> tuple[int, ...]:
    d = view.delivery
    return (d.sent, d.delivered, d.bounced, d.failed, d.deferred, d.codes_returned)


#: The ``delivery`` counts (SPEC 8) as the human output names them: ``failed``
#: there means refused by the relay, not a render that failed.
_DELIVERY_NAMES = ["sent", "delivered", "bounced", "refused", "deferred", "codes returned"]


_MAILING_HEADERS = [
    "id",
    "status",
    "recipients",
    "rendered",
    "codes",
    "failed",
    "started",
    "finished",
    "redeemed",
    "redemption rate",
    *_DELIVERY_NAMES,
]


def print_mailings(views: Sequence[MailingView]) -> None:
    """Every mailing, one row each."""
    print_table(_MAILING_HEADERS, [_mailing_row(v) for v in views], empty="(no mailings)")


def print_mailing(view: MailingView) -> None:
    """One mailing's totals, its delivery counts and the latest run of each shard."""
    t = view.totals
    print_fields(
        [
            ("mailing", view.id),
            ("status", view.status_text),
            ("template", view.template),
            ("recipients file", view.recipients_file),
            ("recipients", t.recipients),
            ("rendered", t.rendered),
            ("codes issued", view.codes_issued),
            ("reissues", view.reissues),
            ("redeemed", view.redeemed),
            ("redemption rate", f"{view.redemption_rate:.1%}"),
            ("returned", view.returned),
            ("failed", t.failed),
            ("skipped", t.skipped),
            ("started", view.started_at),
            ("finished", view.finished_at),
            *([("cancelled", view.cancelled_at)] if view.cancelled_at else []),
        ],
        indent="",
    )
    say()
    say("delivery (send and the mail services' events):")
    print_fields(list(zip(_DELIVERY_NAMES, _delivery_cells(view), strict=True)))
    # Always, one run included: which shard ran, and how each run ended.
    say()
    say("runs (the latest of each shard):")
    print_table(
        [
            "shard",
            "status",
            "recipients",
            "rendered",
            "new codes",
            "reused",
            "failed",
            "skipped",
            "started",
            "finished",
        ],
        [
            (
                r["shard"],
                r["status"],
                r["recipients"],
                r["rendered"],
                r["new_codes"],
                r["reused_codes"],
                r["failed"],
                r["skipped"],
                _when(r["started_at"]),
                _when(r["finished_at"]),
            )
            for r in view.runs
        ],
        empty="(no runs)",
    )


def _when(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso is not None else None


def report_return(report: ReturnReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_dict())
    else:
        kept = report.kept
        say(
            f"Mailing {report.mailing}: {plural(report.returned, 'code')} back in their pools; "
            f"kept {kept.redeemed:,} redeemed, {kept.reissued:,} reissued, "
            f"{kept.multi_use:,} multi-use."
        )
        if report.not_issued:
            note(f"{plural(report.not_issued, 'listed recipient')} held no code from this mailing")
    failure = report.unmatched_error()
    if failure is None:
        return
    if len(report.unmatched) > 1:
        unmatched = report.unmatched_digest()
        for line in unmatched.lines("matched nobody"):
            note(line)
        if not unmatched.whole and not as_json:
            note("Every unmatched line: --json.")
    raise CommandFailed(failure)
