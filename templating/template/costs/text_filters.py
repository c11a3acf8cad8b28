"""What the filters that build text cost (case, escaping, padding, wrapping, JSON).

Each: T = characters of the value as text, n = its items; the comment says
what the original builds.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

from promomail.templating.template import render_limits
from promomail.templating.template.costs.measures import (
    ESCAPE_GROWTH,
    JSON_GROWTH,
    OBJECT,
    QUOTE_COST,
    _arg,
    _as_text,
    _case,
    _count,
    _escaped,
    _escaping,
    _shape,
    _stringified,
    _text,
)
from promomail.templating.template.limits import (
    _check_width,
    check_percent,
    check_text_length,
    printed_size,
)
from promomail.templating.template.render_limits import refuse


def _case_filter(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # upper, lower, capitalize: str(value), then one case-changed copy.
    return _stringified(value) + _case(value)


def _title(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # The words split out (text and one object per word at most), each word's
    # first letter upper-cased, the rest lower-cased and the two concatenated,
    # the list of those, the join.
    size = _text(value)
    return _stringified(value) + (2 + OBJECT) * size + 4 * _case(value)


def _string(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    return _stringified(value)


def _safe(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # Markup(value): str(value) and the Markup copy.
    return _stringified(value) + _text(value)


def _escape(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # str(value), the escaped text and its Markup copy.
    return _stringified(value) + 2 * _escaped(value)


def _forceescape(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    return _stringified(value) + _text(value) + 2 * _escaped(str(value))


def _center(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    width = _arg(args, kw, 0, "width", 80)
    _check_width(width, "|center width")
    return _stringified(value) + max(_text(value), width if isinstance(width, int) else 0)


def _trim(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    return _stringified(value) + _text(value)


def _truncate(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # A slice, its rsplit (two pieces), the ellipsis added.
    end = _arg(args, kw, 2, "end", "...")
    return 3 * _text(value) + 2 * (len(end) if isinstance(end, str) else 0)


def _wordcount(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # str(value), every word found (its text, its object and list slot): a
    # word and the space after it are two characters at least.
    return _stringified(value) + (2 + OBJECT // 2) * _text(value)


def _striptags(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # str(value), a Markup copy, two regex passes, split into words and
    # joined, another Markup, unescaped: about ten copies of the text, and
    # an object per word.
    return (11 + OBJECT // 2) * _text(value)


def _format(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    text, made = _as_text(value)
    return made + check_percent(text, kw or args, "|format")


def _replace(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    old, new = _arg(args, kw, 0, "old", ""), _arg(args, kw, 1, "new", "")
    count = _arg(args, kw, 2, "count")
    escaping = _escaping(passed)
    text, made = _as_text(value)
    size = made
    if escaping and not isinstance(value, Markup):
        size += 2 * _escaped(text)
    result = _replaced_size(
        text, _text(old), _text(new) * (ESCAPE_GROWTH if escaping else 1), str(old), count
    )
    return size + (2 if escaping else 1) * result


def _replaced_size(text: str, old_size: int, new_size: int, old: str, count: Any) -> int:
    """Characters of ``text.replace(old, new, count)``, checked against render_limits.LIMITS.text."""
    growth = max(new_size - old_size, 0)
    if growth:
        times = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        growth *= times
    size = len(text) + growth
    check_text_length(size, "str.replace() result")
    return size


def _indent(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    width = _arg(args, kw, 0, "width", 4)
    _check_width(width, "|indent width")
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 4
    text, made = _as_text(value)
    lines = text.count("\n") + 1
    result = len(text) + (lines + 1) * max(step, 0)
    check_text_length(result, "|indent result")
    # The lines split out (text, objects), the indented lines joined, the
    # first line prepended, the indentation prepended.
    return made + len(text) + OBJECT * lines + 3 * result


def _wordwrap(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    width = _arg(args, kw, 0, "width", 79)
    wrap = _arg(args, kw, 2, "wrapstring")
    wrap_size = _text(wrap) if wrap is not None else 1
    text, made = _as_text(value)
    paragraphs = text.count("\n") + 1
    # Refused outright when even text broken at every other character is too long.
    likely = min(len(text), len(text) // 2 + paragraphs)
    check_text_length(len(text) + likely * wrap_size, "|wordwrap result")
    # Charged for the worst: every line full but for one more chunk, or one
    # character a line.
    steps = width if isinstance(width, int) and width > 0 else 1
    breaks = min(len(text), 2 * len(text) // steps + paragraphs)
    result = len(text) + breaks * wrap_size
    # The paragraphs, textwrap's chunks (text and objects), the lines, two joins.
    return made + (3 + OBJECT // 2) * len(text) + OBJECT * breaks + 2 * result


def _urlencode(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # Each string (or key and value) encoded to UTF-8, quoted byte by byte
    # through a list, the pieces joined.
    return QUOTE_COST * _text(value) + 2 * _count(value)


def _urlize(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    target, rel = _arg(args, kw, 2, "target"), _arg(args, kw, 3, "rel")
    # rel also gets "nofollow" and the environment's policy added.
    extra = sum(_text(text) for text in (target, rel) if text is not None) + 32
    text, made = _as_text(value)
    # Its trailing-punctuation search is quadratic in a word's length, in
    # one step the render's timer cannot stop.
    # The words it looks at are HTML-escaped first: up to 5 characters each.
    longest = 0
    if 5 * len(text) > render_limits.LIMITS.urlize_word:
        longest = max(map(len, str(escape(text)).split()), default=0)
    if longest > render_limits.LIMITS.urlize_word:
        raise refuse(
            f"|urlize of a word of {longest} characters; at most {render_limits.LIMITS.urlize_word}"
        )
    # A link is a word with a dot, an at or a colon in it; each gets an
    # <a href="..." rel="..." target="..."> around it, its text twice.
    links = min(len(text) // 2 + 1, text.count(".") + text.count("@") + text.count(":"))
    escaped = _escaped(text)
    result = 2 * escaped + links * (64 + extra)
    # str(value), escaped, split into words, the result and its pieces.
    return made + 2 * escaped + OBJECT * (len(text) // 2 + 1) + 2 * result


def _xmlattr(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # Each key and value escaped into an f-string, the list, the join, a copy.
    return 2 * (1 + ESCAPE_GROWTH) * _text(value) + OBJECT * _count(value)


def _pprint(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # pprint holds the repr of each enclosing list while it lays out the
    # next level, and indents every line by its depth.
    size = _text(value)
    items, depth, _ = _shape(value)
    return (depth + 2) * (size + OBJECT * items)


def _tojson(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    indent = _arg(args, kw, 0, "indent")
    if isinstance(indent, str) or (
        isinstance(indent, int) and indent > render_limits.LIMITS.json_indent
    ):
        raise refuse(f"|tojson indent of {indent!r}; at most {render_limits.LIMITS.json_indent}")
    size = printed_size(value)
    items, depth, wide = _shape(value)
    step = indent if isinstance(indent, int) and indent > 0 else 0
    # ensure_ascii escapes, then four replaces for HTML (<, >, &, '): the
    # dump and one replaced copy alive at a time; dicts' keys sorted.
    dumped = JSON_GROWTH * (size + wide) + items * (step * depth + 2)
    return 2 * dumped + OBJECT * items
