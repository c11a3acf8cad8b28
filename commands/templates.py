"""``promomail check`` and ``preview``: a template tried without writing anything."""

from __future__ import annotations

import click

from promomail.commands.errors import CommandFailed
from promomail.commands.options import (
    limit_option,
    pairs,
    recipients_option,
    template_argument,
    var_option,
)
from promomail.commands.output import emit_json, json_option, note, plural, print_table, say
from promomail.commands.state import get_engine


@click.command("check")
@template_argument
@recipients_option("Also check the template's client columns against this file.")
@json_option
@click.pass_context
def check(ctx: click.Context, template: str, recipients: str | None, as_json: bool) -> None:
    """Syntax, parts, pools and columns of a template; writes nothing."""
    from promomail.templating import check_template

    report = check_template(get_engine(ctx, create=False), template, recipients)
    if as_json:
        emit_json(report.as_dict())
    elif report.compiled:
        # A template that does not compile has no parts or pools to list:
        # the error alone says what is wrong.
        say(f"{report.template}: parts {', '.join(report.parts) or '-'}")
        print_table(
            ["pool", "id", "usage", "line", "status", "available"],
            [(p.ref, p.pool_id, p.usage, p.line, p.status, p.available) for p in report.pools],
            empty="(no promo code calls)",
        )
        if report.columns:
            say(f"client columns: {', '.join(report.columns)}")
        if report.partials:
            say(f"partials (from the template's folder): {', '.join(report.partials)}")
    # The Error line names template, line and reason; the rest are listed above it.
    failure = report.failure()
    if failure is not None:
        if len(report.problems) > 1:
            for line in report.problem_lines():
                note(line)
        raise CommandFailed(failure)
    if not as_json:
        say("OK")


@click.command("preview")
@template_argument
@click.option(
    "--recipient",
    "recipient_fields",
    multiple=True,
    metavar="KEY=VALUE",
    help="A column of the one recipient to preview (repeat).",
)
@recipients_option("Preview the first recipients of this file.")
@limit_option("How many recipients of --recipients.", default=3)
@click.option("--part", metavar="NAME", help="Only this part (subject, text, html, body).")
@var_option
@json_option
@click.pass_context
def preview_command(
    ctx: click.Context,
    template: str,
    recipient_fields: tuple[str, ...],
    recipients: str | None,
    limit: int,
    part: str | None,
    variables: tuple[str, ...],
    as_json: bool,
) -> None:
    """Render without writing: new codes show as placeholders naming the pool."""
    from promomail.templating import preview, preview_recipients

    if recipients and recipient_fields:
        raise click.UsageError("give either --recipient KEY=VALUE or --recipients FILE")
    people = preview_recipients(recipients, pairs(recipient_fields, "--recipient"), limit)
    previews = preview(
        get_engine(ctx, create=False),
        template,
        people,
        part=part,
        variables=pairs(variables, "--var"),
    )
    if as_json:
        emit_json([p.as_dict() for p in previews])
    else:
        for shown in previews:
            say(f"=== {shown.recipient}")
            if shown.parts is None:
                say(f"(failed: {shown.error})")
                continue
            for name, text in shown.parts.items():
                say(f"--- {name}")
                say(text.rstrip("\n"), layout=True)
    failed = [p for p in previews if p.error]
    for shown in failed:
        note(f"recipient {shown.recipient}: {shown.error}")
    if failed:
        raise CommandFailed(f"{plural(len(failed), 'recipient')} could not be rendered")
