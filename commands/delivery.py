"""``send``, ``deliveries`` and ``events import``: a mailing's messages after the render.

Store work is the library's (``pools.send_run``, ``pools.list_deliveries``,
``pools.apply_delivery_event``), the SMTP and the event files are
``delivery``'s; these commands parse, call and print.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import click

from promomail.cli import PromomailGroup
from promomail.commands.errors import CommandFailed
from promomail.commands.options import limit_option
from promomail.commands.output import (
    emit_json,
    json_option,
    note,
    plural,
    print_table,
    round_rate,
    say,
)
from promomail.commands.progress import progress_bar
from promomail.commands.state import get_engine
from promomail.commands.values import LibraryValue
from promomail.pools.choices import DELIVERY_STATUSES

if TYPE_CHECKING:
    from promomail.delivery import Outcome, SendSummary
    from promomail.templating import Shard

#: SMTP sessions at most: each holds a thread and, while it records, a store connection.
MAX_CONNECTIONS = 32


def _connections(text: str) -> int:
    from promomail.pools import InvalidSetting

    if not text.isascii() or not text.isdigit():
        raise InvalidSetting(f"{text!r} is not a whole number (1 to {MAX_CONNECTIONS})")
    value = int(text)
    if not 1 <= value <= MAX_CONNECTIONS:
        raise InvalidSetting(f"must be 1 to {MAX_CONNECTIONS}, not {value:,}")
    return value


def _rate(text: str) -> float:
    from promomail.pools import InvalidSetting

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value > 1_000_000 or not text.replace(".", "", 1).isdigit():
        raise InvalidSetting(f"{text!r} is not a number of messages per second (more than 0)")
    return value


def _shard(text: str) -> Shard:
    from promomail.templating import parse_shard

    return parse_shard(text)


def _duration(text: str) -> float:
    from promomail.delivery import parse_duration

    return parse_duration(text)


@click.command("send")
@click.argument("mailing_id", metavar="MAILING")
@click.option(
    "--messages",
    "messages_path",
    required=True,
    type=click.Path(exists=True),
    metavar="PATH",
    help="The render's output: its JSON Lines file or its .eml folder.",
)
@click.option(
    "--smtp",
    "smtp_url",
    envvar="PROMOMAIL_SMTP_URL",
    metavar="URL",
    help="smtp://[USER:PASS@]HOST[:PORT] or smtps://… (env PROMOMAIL_SMTP_URL).",
)
@click.option(
    "--rate",
    type=LibraryValue("N", _rate),
    metavar="N",
    help="At most N messages per second overall, evenly spaced.",
)
@click.option(
    "--connections",
    type=LibraryValue("N", _connections),
    default=4,
    show_default=True,
    metavar="N",
    help=f"SMTP sessions at once, each reused for many messages (1 to {MAX_CONNECTIONS}).",
)
@click.option(
    "--retry-for",
    "retry_for",
    type=LibraryValue("DURATION", _duration),
    default="60s",
    show_default=True,
    metavar="DURATION",
    help="Retry a deferred message within this run for this long (90s, 15m, 1h).",
)
@click.option(
    "--shard",
    "shard_slice",
    type=LibraryValue("K/N", _shard),
    metavar="K/N",
    help="Send only shard K of N, as render --shard K/N split them.",
)
@json_option
@click.pass_context
def send(
    ctx: click.Context,
    mailing_id: str,
    messages_path: str,
    smtp_url: str | None,
    rate: float | None,
    connections: int,
    retry_for: float,
    shard_slice: Shard | None,
    as_json: bool,
) -> None:
    """Send a rendered mailing through an SMTP relay, recording each message's state.

    Sends only what no earlier run sent or the relay refused; a message the
    relay refused for good (5xx) gives its codes back at once. One run per
    mailing and shard at a time. Exit 1 when a message is left deferred (run
    again later) or failed.
    """
    from promomail.delivery import read_output, relay_from_environment, send_messages
    from promomail.pools import send_run

    # Everything that can be refused is, before anything is recorded or sent.
    relay = relay_from_environment(smtp_url)
    output = read_output(messages_path, mailing_id, shard=shard_slice)
    shard = shard_slice.label if shard_slice is not None else "all"
    engine = get_engine(ctx)
    with (
        progress_bar("Sending", "messages") as bar,
        send_run(engine, mailing_id, shard) as log,
    ):
        if bar.shown:
            # Messages an earlier run settled are skipped, not sent again: the
            # bar starts with them done. Only a terminal pays for this read.
            refs = [message.ref for message in output]
            before = log.settled_before(refs)
            bar.counted(len(refs), done=before, note=f"({before:,} done before)" if before else "")

        def advance(_outcome: Outcome) -> None:
            bar.advance(1)

        summary = send_messages(
            output,
            relay,
            log,
            connections=connections,
            rate=rate,
            retry_for=retry_for,
            progress=advance,
        )
    _report_send(mailing_id, shard, relay.shown, summary, as_json)


def _report_send(
    mailing_id: str, shard: str, relay: str, summary: SendSummary, as_json: bool
) -> None:
    if as_json:
        emit_json({"mailing": mailing_id, "shard": shard, "relay": relay, **summary.as_dict()})
    for recipient, reason in summary.skipped_messages:
        note(f"recipient {recipient} skipped: {reason}")
    shown = f"{summary.seconds:.1f}" if summary.seconds >= 1 else f"{summary.seconds:.2f}"
    already = f", {summary.already:,} done before" if summary.already else ""
    note(
        f"Mailing {mailing_id} ({shard}) via {relay}: {summary.sent:,} sent, "
        f"{summary.deferred:,} deferred, {summary.failed:,} failed, "
        f"{summary.skipped:,} skipped{already}, "
        f"{plural(summary.codes_returned, 'code')} returned in {shown} s — "
        f"{round_rate(summary.rate):,} messages/s"
    )
    if not summary.complete:
        parts = []
        if summary.deferred:
            parts.append(
                f"{plural(summary.deferred, 'message')} deferred (run the same command again "
                "later to send them)"
            )
        if summary.failed:
            parts.append(
                f"{plural(summary.failed, 'message')} refused by the relay (their codes went "
                "back to their pools)"
            )
        raise CommandFailed("; ".join(parts))


_STATUSES = list(DELIVERY_STATUSES)


@click.command("deliveries")
@click.argument("mailing_id", metavar="MAILING")
@click.option("--status", type=click.Choice(_STATUSES), help="Only the messages in this state.")
@limit_option("At most N messages.")
@json_option
@click.pass_context
def deliveries(
    ctx: click.Context, mailing_id: str, status: str | None, limit: int | None, as_json: bool
) -> None:
    """Each message of a mailing with its delivery state and the last answer about it."""
    from promomail.pools import list_deliveries

    views = list_deliveries(get_engine(ctx, create=False), mailing_id, status=status, limit=limit)
    if as_json:
        emit_json([v.as_dict() for v in views])
        return
    print_table(
        ["recipient", "status", "attempts", "codes returned", "updated", "last answer"],
        [
            (v.recipient, v.status, v.attempts, v.codes_returned, v.updated_at, v.answer)
            for v in views
        ],
        empty="(no messages sent or reported on)",
    )


@click.group("events", cls=PromomailGroup)
def events() -> None:
    """Delivery events from files: bounce messages and promomail's own JSON Lines."""


@events.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(), metavar="FILE...")
@click.option(
    "--provider",
    type=click.Choice(["promomail", "dsn"]),
    help="The files' form (default: promomail for .jsonl files, dsn otherwise).",
)
@json_option
@click.pass_context
def events_import(
    ctx: click.Context, files: tuple[str, ...], provider: str | None, as_json: bool
) -> None:
    """Apply delivery events from files: promomail's JSON Lines, or bounce messages
    (RFC 3464 DSNs: .eml files, an mbox or a Maildir).

    A permanent failure gives back the codes of that message; the same event
    again changes nothing. Every file item that is not an event is reported
    (file, line or message, reason) and the others are applied; exit 1 then.
    """
    from promomail.delivery import import_event_files
    from promomail.pools import apply_delivery_event

    report = import_event_files(
        files, provider, functools.partial(apply_delivery_event, get_engine(ctx))
    )
    if as_json:
        emit_json(report.as_dict())
    else:
        say(
            f"{plural(report.applied, 'event')} applied, {report.duplicates:,} seen before, "
            f"{report.unmatched:,} about no message of this store"
        )
    for problem in report.problems:
        note(str(problem))
    if report.problems:
        first = report.problems[0]
        raise CommandFailed(
            f"{plural(len(report.problems), 'item')} of the files gave no event (first: "
            f"{first}); the other events were applied"
        )
