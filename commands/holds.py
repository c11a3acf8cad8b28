"""``hold`` and ``release``: a checkout keeps a single-use code for its order while it pays.

Beside ``redeem`` and run as often, so this module imports the holds module
alone and nothing of the reports.
"""

from __future__ import annotations

from datetime import timedelta

import click

from promomail.commands.errors import CommandFailed
from promomail.commands.options import pool_choice_option
from promomail.commands.output import answered_as_json, json_option, say
from promomail.commands.state import get_engine
from promomail.commands.values import LibraryValue
from promomail.pools.choices import DEFAULT_HOLD


def _hold_length(text: str) -> timedelta:
    # Imported when a value is parsed: declaring the option imports no store code.
    from promomail.pools import parse_hold_duration

    return parse_hold_duration(text)


def _default_length() -> str:
    return f"{int(DEFAULT_HOLD.total_seconds()) // 60}m"


@click.command("hold")
@click.argument("code")
@click.option("--order", required=True, metavar="O", help="The order whose checkout started.")
@click.option("--customer", "customer_id", metavar="C", help="Who is buying.")
@pool_choice_option()
@click.option(
    "--for",
    "length",
    type=LibraryValue("duration", _hold_length),
    default=_default_length(),
    show_default=True,
    metavar="DURATION",
    help="How long the hold lasts: 30s to 24h (e.g. 90s, 15m, 2h).",
)
@json_option
@click.pass_context
def hold_command(
    ctx: click.Context,
    code: str,
    order: str,
    customer_id: str | None,
    pool_id: str | None,
    length: timedelta,
    as_json: bool,
) -> None:
    """Hold a single-use code for an order while its payment runs; exit 1 when refused.

    Nobody else can redeem the code until the hold ends: by the order's
    redemption, by release, or when its time runs out. The same order
    again is a replay that may extend the hold.
    """
    from promomail.pools import hold_code

    result = hold_code(
        get_engine(ctx), code, order=order, customer=customer_id, pool=pool_id, length=length
    )
    if answered_as_json(ctx, result, as_json):
        return
    if not result.ok:
        raise CommandFailed(f"code {code!r} cannot be held: {result.reason}")
    assert result.expires_at is not None
    until = result.expires_at.isoformat(sep=" ", timespec="seconds")
    verb = "Still held (replayed)" if result.replayed else "Held"
    say(f"{verb}: {result.code} from pool {result.pool} for order {order} until {until} UTC.")


@click.command("release")
@click.argument("code")
@click.option("--order", required=True, metavar="O", help="The order that held the code.")
@pool_choice_option("The pool, when the order holds the code in several.")
@json_option
@click.pass_context
def release_command(
    ctx: click.Context, code: str, order: str, pool_id: str | None, as_json: bool
) -> None:
    """End an order's hold of a code at once: the payment failed or the cart was abandoned."""
    from promomail.pools import release_hold

    result = release_hold(get_engine(ctx), code, order=order, pool=pool_id)
    if answered_as_json(ctx, result, as_json):
        return
    if not result.ok:
        raise CommandFailed(f"nothing released: {result.reason}")
    say(f"Released {result.code} (pool {result.pool}) held by order {order}.")
