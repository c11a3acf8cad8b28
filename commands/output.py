"""What the commands print: JSON documents, aligned tables, key/value blocks,
the timed summary line of long work (its progress bar: :mod:`commands.progress`).

``--json`` prints exactly one JSON document on stdout; human output goes to
stdout, every line of it through :func:`printable`; progress, summaries and
warnings go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

if TYPE_CHECKING:
    from promomail.pools import LowStockAlert


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


class Answer(Protocol):
    """A checkout's answer: accepted or refused, and its document."""

    @property
    def ok(self) -> bool: ...

    def as_dict(self) -> dict[str, Any]: ...


def answered_as_json(ctx: click.Context, answer: Answer, as_json: bool) -> bool:
    """With ``--json``: print the answer's document, exit 1 when it is a refusal."""
    if not as_json:
        return False
    emit_json(answer.as_dict())
    if not answer.ok:
        ctx.exit(1)
    return True


def emit_json(document: Any) -> None:
    """One JSON document on stdout: exact, and with nothing in it a terminal would run."""
    text = json.dumps(document, indent=2, ensure_ascii=False, default=_json_default)
    from promomail.pools import json_for_terminal

    click.echo(json_for_terminal(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        from promomail.pools.store.clock import iso_seconds

        return iso_seconds(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def printable(text: str, *, layout: bool = False) -> str:
    """``text`` with every terminal control shown as an escape (see :mod:`pools.display`).

    Every human line the commands print goes through here: through
    :func:`say`, :func:`note`, :func:`cell` (tables and fields) or an
    ``Error:`` line. ``--json`` documents stay exact (:func:`emit_json`).
    """
    from promomail.pools import printable as shown

    return shown(text, layout=layout)


def say(text: str = "", *, layout: bool = False) -> None:
    """A line of a command's human output on stdout; ``layout`` keeps its own line breaks."""
    click.echo(printable(text, layout=layout))


def note(message: str) -> None:
    """A line for the person at the terminal: stderr, never mixed with results."""
    click.echo(printable(message), err=True)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return printable(str(value))


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "(none)"
) -> None:
    """An aligned table; numeric columns are right-aligned."""
    raw = [list(row) for row in rows]
    if not raw:
        click.echo(empty)
        return
    # A column of only empty cells ("-") is not numeric: it stays left-aligned.
    numeric = [
        any(isinstance(row[i], int) and not isinstance(row[i], bool) for row in raw)
        and all(isinstance(row[i], int) and not isinstance(row[i], bool) for row in raw if row[i])
        for i in range(len(headers))
    ]
    text = [[cell(v) for v in row] for row in raw]
    widths = [max(len(h), *(len(row[i]) for row in text)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    click.echo(line(headers))
    for row in text:
        click.echo(line(row))


def print_fields(pairs: Sequence[tuple[str, Any]], *, indent: str = "  ") -> None:
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        click.echo(f"{indent}{key.ljust(width)}  {cell(value)}".rstrip())


def stdin_is_terminal() -> bool:
    """Whether a person can answer a confirmation prompt."""
    return sys.stdin.isatty()


def plural(count: int, noun: str) -> str:
    """``1 code``, ``2 codes`` (see :func:`pools.display.counted`)."""
    from promomail.pools import counted

    return counted(count, noun)


def summary(verb: str, count: int, detail: str, seconds: float, rate_of: int) -> str:
    """``Uploaded 1,000 codes (3 duplicates, 0 rejected) in 4.2 s — 238 codes/s``."""
    rate = rate_of / seconds if seconds > 0 else float(rate_of)
    shown = f"{seconds:.1f}" if seconds >= 1 else f"{seconds:.2f}"
    detail = f" ({detail})" if detail else ""
    return f"{verb} {plural(count, 'code')}{detail} in {shown} s — {round_rate(rate):,} codes/s"


def round_rate(rate: float) -> int:
    """Three significant figures: a rate is an estimate, not a count."""
    if rate < 1000:
        return round(rate)
    digits = len(str(int(rate))) - 3
    return int(round(rate, -digits))


def warn_low_stock(alerts: Sequence[LowStockAlert]) -> None:
    for alert in alerts:
        for line in alert.warnings():
            note(f"Warning: {line}")
