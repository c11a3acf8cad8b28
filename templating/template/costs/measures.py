"""What a filter's or method's input measures: characters, items, growth.

The units every cost function of :mod:`templating.template.costs` counts in,
and the helpers that read them off a value without building anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from markupsafe import Markup

from promomail.templating.template import render_limits
from promomail.templating.template.limits import (
    _SIZED_TYPES,
    printed_size,
)

#: Characters one character may become when its case changes (``'ΐ'.upper()``).
CASE_GROWTH = 3
#: Characters one character may become when HTML-escaped (``&`` → ``&amp;``).
ESCAPE_GROWTH = 5
#: Text shorter than this is charged its worst escaping; longer text is counted.
_COUNT_ESCAPES_FROM = 4096
#: ``tojson``: a character outside the BMP becomes two ``\\uXXXX`` escapes,
#: an ASCII ``<`` becomes ``\\u003c``.
JSON_GROWTH = 6
#: ``urlencode``: a character is up to 4 UTF-8 bytes, each ``%XX``, each a
#: piece in a list before the join.
QUOTE_COST = 20
#: ``str.encode``: ``'unicode_escape'`` writes ``\\U0010ffff`` for one character.
ENCODE_GROWTH = 12
#: ``str.encode(errors='namereplace')``: ``\\N{...}`` holds a character's name.
NAME_GROWTH = 100
#: Units for each object an operation creates per item (a key list, a tuple,
#: a word): its header is 50 to 100 bytes, where a character is 1 to 4.
OBJECT = 8

#: Types whose ``len()`` is their number of items, cheaply and without side effects.
_LENGTH_TYPES = frozenset({*_SIZED_TYPES, type({}.keys()), type({}.values()), type({}.items())})

#: cost(value, args, kwargs, passed): args and kwargs as the filter gets them
#: after its value; ``passed`` is the environment, eval context or context
#: Jinja hands the filter first, or None.
FilterCost = Callable[[Any, tuple[Any, ...], dict[str, Any], Any], int]
#: cost(owner, args, kwargs): ``owner`` is the method's ``__self__``.
MethodCost = Callable[[Any, tuple[Any, ...], dict[str, Any]], int]


def _arg(
    args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str, default: Any = None
) -> Any:
    return args[at] if len(args) > at else kwargs.get(name, default)


def _count(value: Any) -> int:
    """Items in ``value`` when it knows (lists, dicts, text, ranges); 0 otherwise."""
    return len(value) if type(value) in _LENGTH_TYPES else 0


def _text(value: Any) -> int:
    """Characters of ``str(value)``; refuses what may not be printed."""
    return len(value) if type(value) is str else printed_size(value)


def _stringified(value: Any) -> int:
    """What making ``value`` text costs: nothing for text, a copy otherwise."""
    return 0 if isinstance(value, str) else printed_size(value)


def _as_text(value: Any) -> tuple[str, int]:
    """``str(value)`` once its size is known to be bounded, and what making it cost."""
    if isinstance(value, str):
        return value, 0
    size = printed_size(value)
    return str(value), size


def _str_size(item: Any) -> int:
    """Characters ``str(item)`` makes (a text item is itself, without quotes)."""
    return len(item) if isinstance(item, str) else printed_size(item)


def _case(value: Any) -> int:
    """Characters a change of case makes of ``value``: ASCII keeps its length."""
    if isinstance(value, str) and value.isascii():
        return len(value)
    return CASE_GROWTH * _text(value)


def _escaped(value: Any) -> int:
    """Characters HTML escaping makes of ``value``: counted for long text."""
    if isinstance(value, Markup):
        return len(value)
    size = _text(value)
    if size < _COUNT_ESCAPES_FROM or not isinstance(value, str):
        return ESCAPE_GROWTH * size
    count = value.count
    return size + 4 * (count("&") + count('"') + count("'")) + 3 * (count("<") + count(">"))


def _escaping(passed: Any) -> bool:
    """Whether the filter escapes (the HTML part): ``passed`` is its eval context."""
    return getattr(passed, "autoescape", False) is True


def _environment(passed: Any) -> Any:
    return getattr(passed, "environment", passed)


def _lowered(keys: Iterable[Any]) -> int:
    """Characters Jinja's ``ignore_case`` copies: every text key, lower-cased."""
    size = 0
    for key in keys:
        if isinstance(key, str):
            size += OBJECT + (len(key) if key.isascii() else CASE_GROWTH * len(key))
    return size


def _shape(value: Any) -> tuple[int, int, int]:
    """Items, nesting depth and non-ASCII characters of a printable value.

    Called after :func:`printed_size` accepted it, so the walk is bounded.
    """
    items = depth = wide = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                wide += len(item)
        elif type(item) in (list, tuple, dict):
            items += len(item)
            depth = max(depth, level)
            if level <= render_limits.LIMITS.print_depth:
                if type(item) is dict:
                    pending.extend((key, level + 1) for key in item)
                    pending.extend((val, level + 1) for val in item.values())
                else:
                    pending.extend((element, level + 1) for element in item)
    return items, depth, wide
