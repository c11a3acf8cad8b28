"""Options and arguments shared by the template commands and ``render``.

Apart from :mod:`commands.templates` so that ``render``'s module, which also
holds store commands (``mailings``, ``mailing …``), need not import Jinja2.
"""

from __future__ import annotations

from collections.abc import Sequence

import click


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
