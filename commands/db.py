"""``promomail db``: schema migrations for operators.

The one group that opens the store without migrating it first.
"""

from __future__ import annotations

import click

from promomail.cli import PromomailGroup
from promomail.commands.output import emit_json, json_option, say
from promomail.commands.state import get_engine


@click.group(cls=PromomailGroup)
def db() -> None:
    """Schema migrations (every other command upgrades automatically)."""


@db.command("upgrade")
@json_option
@click.pass_context
def db_upgrade(ctx: click.Context, as_json: bool) -> None:
    """Bring the database schema to the newest revision."""
    from promomail.pools import current_revision, upgrade

    engine = get_engine(ctx, migrate=False)
    before = current_revision(engine)
    after = upgrade(engine)
    if as_json:
        emit_json({"from": before, "to": after, "changed": before != after})
    elif before == after:
        say(f"Schema already at the newest revision {after}.")
    else:
        say(f"Schema upgraded from {before or '(empty)'} to {after}.")


@db.command("current")
@json_option
@click.pass_context
def db_current(ctx: click.Context, as_json: bool) -> None:
    """Show the schema revision of the database and the newest one."""
    from promomail.pools import current_revision, head_revision

    current = current_revision(get_engine(ctx, migrate=False, create=False))
    head = head_revision()
    if as_json:
        emit_json({"current": current, "head": head, "up_to_date": current == head})
        return
    status = "up to date" if current == head else "run 'promomail db upgrade'"
    say(f"current  {current or '(empty database)'}")
    say(f"head     {head}  ({status})")
