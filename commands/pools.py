"""``promomail pool …``: the life cycle of pools."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from promomail.cli import PromomailGroup
from promomail.commands.codes import print_imports
from promomail.commands.errors import misused_options
from promomail.commands.output import emit_json, json_option, print_fields, print_table, say
from promomail.commands.state import complete_pool_id, get_engine

if TYPE_CHECKING:
    from promomail.pools import PoolView


@click.group(cls=PromomailGroup)
def pool() -> None:
    """Create, activate, edit, archive, delete, list and show pools."""


def _report_pool(verb: str, view: PoolView, as_json: bool) -> None:
    """What a pool command did: the pool as JSON, or one line."""
    if as_json:
        emit_json(view.as_dict())
    else:
        say(f"{verb} pool {view.id} ({view.name!r}, {view.status}, {view.settings.mode}).")


@pool.command("create")
@click.argument("name")
@click.option("--id", "pool_id", metavar="ID", help="Pool id (default: a slug of NAME).")
@click.option("--description", metavar="TEXT", help="What the pool is for (needed to activate).")
@click.option("--multi-use", is_flag=True, help="One shared code, never consumed.")
@click.option(
    "--once-per-customer",
    is_flag=True,
    help="Multi-use: each customer may redeem the shared code once.",
)
@click.option("--require-issued", is_flag=True, help="Redeemable only after being issued.")
@click.option("--issued-valid-days", type=int, metavar="N", help="Validity after issue.")
@click.option("--low-stock", type=int, metavar="N", help="Warn below N available codes.")
@click.option("--notify-url", metavar="URL", help="Webhook for low-stock notices.")
@click.option("--notify-email", metavar="ADDR", help="E-mail address for low-stock notices.")
@click.option("--per-customer", type=int, metavar="N", help="Each customer holds N codes.")
@click.option("--activate", is_flag=True, help="Activate right away.")
@json_option
@click.pass_context
def pool_create(
    ctx: click.Context,
    name: str,
    pool_id: str | None,
    description: str | None,
    multi_use: bool,
    once_per_customer: bool,
    require_issued: bool,
    issued_valid_days: int | None,
    low_stock: int | None,
    notify_url: str | None,
    notify_email: str | None,
    per_customer: int | None,
    activate: bool,
    as_json: bool,
) -> None:
    """Create a pool named NAME, in status draft unless --activate."""
    from promomail.pools import InvalidSetting, PoolSettings, create_pool

    try:
        settings = PoolSettings.from_options(
            name,
            description=description,
            multi_use=multi_use,
            once_per_customer=once_per_customer,
            require_issued=require_issued,
            issued_valid_days=issued_valid_days,
            per_customer=per_customer,
            low_stock=low_stock,
            notify_url=notify_url,
            notify_email=notify_email,
        )
    except InvalidSetting as exc:
        # The options given do not make a pool together: a usage error, as for ``edit``.
        raise misused_options(exc, ctx) from exc
    view = create_pool(get_engine(ctx), settings, pool_id=pool_id, activate=activate)
    _report_pool("Created", view, as_json)


@pool.command("activate")
@click.argument("pool_id", metavar="ID", shell_complete=complete_pool_id)
@json_option
@click.pass_context
def pool_activate(ctx: click.Context, pool_id: str, as_json: bool) -> None:
    """Move a draft pool to active; it then issues codes."""
    from promomail.pools import activate_pool

    view = activate_pool(get_engine(ctx), pool_id)
    _report_pool("Activated", view, as_json)


@pool.command("edit")
@click.argument("pool_id", metavar="ID", shell_complete=complete_pool_id)
@click.option("--name", help="New display name.")
@click.option("--description", metavar="TEXT", help="New description.")
@click.option("--low-stock", type=int, metavar="N", help="Warn below N available codes.")
@click.option("--notify-url", metavar="URL", help="Webhook for low-stock notices.")
@click.option("--notify-email", metavar="ADDR", help="Address for low-stock notices.")
@click.option(
    "--clear",
    "cleared",
    multiple=True,
    type=click.Choice(["description", "notify-url", "notify-email"]),
    help="Remove this setting (repeat for several).",
)
@click.option("--issued-valid-days", type=int, metavar="N", help="Validity after issue.")
@click.option(
    "--multi-use/--single-use", default=None, help="Mode (only while the pool is a draft)."
)
@click.option(
    "--require-issued/--no-require-issued",
    default=None,
    help="Redeemable only after issue (only while a draft).",
)
@click.option("--per-customer", type=int, metavar="N", help="Codes per customer (draft only).")
@json_option
@click.pass_context
def pool_edit(
    ctx: click.Context,
    pool_id: str,
    name: str | None,
    description: str | None,
    low_stock: int | None,
    notify_url: str | None,
    notify_email: str | None,
    issued_valid_days: int | None,
    multi_use: bool | None,
    require_issued: bool | None,
    per_customer: int | None,
    cleared: tuple[str, ...],
    as_json: bool,
) -> None:
    """Change a pool's settings; mode flags are fixed once the pool is active."""
    from promomail.pools import InvalidSetting, edit_pool, setting_changes

    try:
        changes = setting_changes(
            name=name,
            description=description,
            low_stock=low_stock,
            notify_url=notify_url,
            notify_email=notify_email,
            issued_valid_days=issued_valid_days,
            multi_use=multi_use,
            require_issued=require_issued,
            per_customer=per_customer,
            cleared=[option.replace("-", "_") for option in cleared],
        )
    except InvalidSetting as exc:
        raise misused_options(exc, ctx) from exc
    view = edit_pool(get_engine(ctx), pool_id, **changes)
    _report_pool("Edited", view, as_json)


@pool.command("archive")
@click.argument("pool_id", metavar="ID", shell_complete=complete_pool_id)
@json_option
@click.pass_context
def pool_archive(ctx: click.Context, pool_id: str, as_json: bool) -> None:
    """Stop a pool issuing codes; its history stays."""
    from promomail.pools import archive_pool

    view = archive_pool(get_engine(ctx), pool_id)
    _report_pool("Archived", view, as_json)


@pool.command("delete")
@click.argument("pool_id", metavar="ID", shell_complete=complete_pool_id)
@json_option
@click.pass_context
def pool_delete(ctx: click.Context, pool_id: str, as_json: bool) -> None:
    """Delete a pool that never issued a code (otherwise archive it)."""
    from promomail.pools import delete_pool

    delete_pool(get_engine(ctx), pool_id)
    if as_json:
        emit_json({"deleted": pool_id})
    else:
        say(f"Deleted pool {pool_id}.")


@pool.command("list")
@json_option
@click.pass_context
def pool_list(ctx: click.Context, as_json: bool) -> None:
    """One row per pool with every count: total, then the parts that add up to it."""
    from promomail.pools import PoolCounts, list_pools

    views = list_pools(get_engine(ctx, create=False))
    if as_json:
        emit_json([view.as_dict() for view in views])
        return
    counts = [name for name, _ in PoolCounts().shown()]
    print_table(
        ("id", "name", "status", "mode", *counts),
        (
            (v.id, v.name, v.status, v.settings.mode, *(n for _, n in v.counts.shown()))
            for v in views
        ),
        empty="No pools yet: create one with 'promomail pool create NAME'.",
    )


#: Settings whose name alone would not say what they mean.
_SETTING_LABELS = {
    "issued_valid_days": "valid days after issue",
    "low_stock": "low stock below",
}


@pool.command("show")
@click.argument("pool_id", metavar="ID", shell_complete=complete_pool_id)
@json_option
@click.pass_context
def pool_show(ctx: click.Context, pool_id: str, as_json: bool) -> None:
    """A pool's settings, counts and import history."""
    from promomail.pools import COUNTS_IDENTITY, import_history, pool_document, show_pool

    engine = get_engine(ctx, create=False)
    if as_json:
        emit_json(pool_document(engine, pool_id))
        return
    view = show_pool(engine, pool_id)
    history = import_history(engine, pool_id)
    s = view.settings
    say(f"Pool {view.id}: {view.name}")
    print_fields(
        [
            ("status", view.status),
            ("mode", s.mode),
            *(
                (_SETTING_LABELS.get(name, name.replace("_", " ")), value)
                for name, value in s.shown()
            ),
            ("created (UTC)", view.created_at),
        ]
    )
    say(f"Counts ({COUNTS_IDENTITY})")
    print_fields(view.counts.shown())
    say("Imports")
    print_imports(history)
