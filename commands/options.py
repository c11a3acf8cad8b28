"""Options and arguments shared by several commands, each defined once.

Apart from :mod:`commands.templates` so that ``render``'s module, which also
holds store commands (``mailings``, ``mailing …``), need not import Jinja2.
Options that mean the same everywhere but are told differently (what a
command does with its ``--recipients`` file) take their help text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def pairs(values: Sequence[str], option: str) -> dict[str, str]:
    """``KEY=VALUE`` option values as a dict, or a usage error naming the option."""
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=option)
        pairs[key.strip()] = text
    return pairs


template_argument = click.argument(
    "template", type=click.Path(exists=True, dir_okay=False), metavar="TEMPLATE"
)
var_option = click.option(
    "--var", "variables", multiple=True, metavar="KEY=VALUE", help="A template variable."
)


def recipients_option(
    help: str, *, dest: str = "recipients", required: bool = False, exists: bool = True
) -> Callable[[F], F]:
    """``--recipients FILE``: a recipients file (``exists=False``: the command
    says itself what is wrong with a missing file)."""
    return click.option(
        "--recipients",
        dest,
        type=click.Path(exists=exists, dir_okay=False),
        required=required,
        metavar="FILE",
        help=help,
    )


def limit_option(help: str, *, default: int | None = None, minimum: int = 1) -> Callable[[F], F]:
    """``--limit N``: at most N of what the command lists."""
    return click.option(
        "--limit",
        type=click.IntRange(min=minimum),
        default=default,
        show_default=default is not None,
        metavar="N",
        help=help,
    )


def pool_choice_option(help: str = "The pool, when the code is in several.") -> Callable[[F], F]:
    """``--pool ID`` of a checkout command: which pool, when one code string is in several."""
    from promomail.commands.state import complete_pool_id

    return click.option(
        "--pool", "pool_id", metavar="ID", shell_complete=complete_pool_id, help=help
    )
