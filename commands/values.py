"""Parameter types the commands share: values parsed by the library's own parsers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from promomail.pools import PromomailError

STDIN_NAME = "<stdin>"


class LibraryValue(click.ParamType[Any]):
    """A value parsed by the library's own parser; its refusal becomes a usage error."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self.parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        if ctx is not None and ctx.resilient_parsing:
            # Shell completion parses the line without running anything: the
            # value is never used, and parsing it would import the library.
            return value
        try:
            return self.parse(value)
        except PromomailError as exc:
            self.fail(str(exc), param, ctx)
