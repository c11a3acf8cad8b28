"""``promomail serve`` and ``promomail token …``: the HTTP service and its bearer tokens.

The service itself (FastAPI, uvicorn) is imported only when ``serve`` runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from promomail.cli import PromomailGroup
from promomail.commands.errors import CommandFailed
from promomail.commands.options import recipients_option
from promomail.commands.output import emit_json, json_option, note, print_table, say
from promomail.commands.state import complete_pool_id, get_engine, get_state
from promomail.pools.choices import Scope


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8025,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--templates",
    type=click.Path(exists=True, file_okay=False),
    metavar="DIR",
    help="Templates (*.j2, *.jinja) for the preview page.",
)
@recipients_option("Recipients to pick from on the preview page.")
@click.pass_context
def serve_command(
    ctx: click.Context, host: str, port: int, templates: str | None, recipients: str | None
) -> None:
    """Serve the HTTP API and the preview page until SIGTERM or Ctrl-C."""
    from promomail.service import ServiceConfig, serve

    config = ServiceConfig(
        get_state(ctx).url,
        host=host,
        port=port,
        templates=Path(templates) if templates else None,
        recipients=Path(recipients) if recipients else None,
    )
    try:
        serve(config)
    except OSError as exc:
        raise CommandFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@click.group("token", cls=PromomailGroup)
def token() -> None:
    """Bearer tokens of the HTTP service."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope", type=click.Choice([s.value for s in Scope]), required=True, help="What it may do."
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    metavar="ID",
    shell_complete=complete_pool_id,
    help="Limit it to this pool (repeat).",
)
@json_option
@click.pass_context
def token_create(
    ctx: click.Context, name: str, scope: str, pools: tuple[str, ...], as_json: bool
) -> None:
    """Make a token; its secret is printed once and only its hash is kept."""
    from promomail.pools import create_token

    issued = create_token(get_engine(ctx), name, Scope(scope), pools)
    if as_json:
        emit_json(issued.as_dict())
        return
    limited = f", pools {', '.join(issued.pools)}" if issued.pools else ""
    say(issued.token)
    note(f"Token {issued.name} (scope {issued.scope}{limited}): shown once, keep it safe.")


@token.command("list")
@json_option
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """Every token with its scope, pools and state (never the secret)."""
    from promomail.pools import list_tokens

    infos = list_tokens(get_engine(ctx, create=False))
    if as_json:
        emit_json([info.as_dict() for info in infos])
        return
    print_table(
        ["name", "scope", "pools", "created", "revoked"],
        [
            (i.name, i.scope, ", ".join(i.pools) or "(all)", i.created_at, i.revoked_at)
            for i in infos
        ],
        empty="(no tokens)",
    )


@token.command("revoke")
@click.argument("name")
@json_option
@click.pass_context
def token_revoke(ctx: click.Context, name: str, as_json: bool) -> None:
    """Revoke a token: the next request with it is refused."""
    from promomail.pools import revoke_token

    info = revoke_token(get_engine(ctx), name)
    if as_json:
        emit_json(info.as_dict())
    else:
        say(f"Revoked token {info.name}.")
