"""What each filter, test and method a template can reach costs, paid before it runs.

A list holds references: ``[s] * 2000`` is 2000 items, however long ``s`` is,
and the :class:`~templating.template.limits.Budget` rightly charges 2000. But
an operation that copies each item's *text* (``|sort`` lower-cases every
string it compares, ``|wordcount`` prints the whole list first) builds
``2000 * len(s)`` characters. So every filter, test and method of a built-in
type that a template can reach has a cost function here: from its inputs, an
upper bound of the memory it takes at its peak (its own temporaries and its
result), in the budget's units (one per character, one per item or object).
The bound is charged to the message's budget *before* the original runs; a
value whose exact size is known and exceeds :data:`~limits.MAX_TEXT` (or
:data:`~limits.MAX_SEQUENCE_PRODUCT` items) is refused outright.

The tables are complete on purpose: a filter or test Jinja adds in a later
version, or a method a later Python adds to ``str``, is refused until
someone writes down what it costs (``tests/templating/test_template_costs.py`` fails
first). Filters and tests that build nothing (``default``, ``length``,
``select``...) are ``None`` and stay unwrapped, so they cost no time either.

An input that is an iterator (``map``, ``select``, ``reverse``...) has no
length to charge: filters that read all of it first take it as a list, paid
item by item as it is read (:meth:`Budget.counted`), and method calls are
handed it the same way.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2.exceptions import SecurityError, TemplateRuntimeError
from jinja2.filters import make_attrgetter, make_multi_attrgetter
from jinja2.utils import _PassArg
from markupsafe import Markup, escape

from templating.template.limits import (
    _SIZED_TYPES,
    MAX_JSON_INDENT,
    MAX_PRINT_DEPTH,
    MAX_ROUND_DIGITS,
    MAX_SEQUENCE_PRODUCT,
    MAX_TEXT,
    MAX_URLIZE_WORD,
    SIZED,
    Budget,
    _check_width,
    check_operand_bits,
    check_percent,
    check_text_length,
    comparison_cost,
    printed_size,
    refuse,
    sort_cost,
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
            if level <= MAX_PRINT_DEPTH:
                if type(item) is dict:
                    pending.extend((key, level + 1) for key in item)
                    pending.extend((val, level + 1) for val in item.values())
                else:
                    pending.extend((element, level + 1) for element in item)
    return items, depth, wide


# -- filters ----------------------------------------------------------------------
# Each: T = characters of the value as text, n = its items; the comment says
# what the original builds.


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
    """Characters of ``text.replace(old, new, count)``, checked against MAX_TEXT."""
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
    if 5 * len(text) > MAX_URLIZE_WORD:
        longest = max(map(len, str(escape(text)).split()), default=0)
    if longest > MAX_URLIZE_WORD:
        raise refuse(f"|urlize of a word of {longest} characters; at most {MAX_URLIZE_WORD}")
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
    if isinstance(indent, str) or (isinstance(indent, int) and indent > MAX_JSON_INDENT):
        raise refuse(f"|tojson indent of {indent!r}; at most {MAX_JSON_INDENT}")
    size = printed_size(value)
    items, depth, wide = _shape(value)
    step = indent if isinstance(indent, int) and indent > 0 else 0
    # ensure_ascii escapes, then four replaces for HTML (<, >, &, '): the
    # dump and one replaced copy alive at a time; dicts' keys sorted.
    dumped = JSON_GROWTH * (size + wide) + items * (step * depth + 2)
    return 2 * dumped + OBJECT * items


def _join(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    separator = _arg(args, kw, 0, "d", "")
    attribute = _arg(args, kw, 1, "attribute")
    items: Any = value if type(value) in _LENGTH_TYPES else list(value)
    if attribute is not None:
        getter = make_attrgetter(_environment(passed), attribute)
        items = [getter(item) for item in items]
    count = len(items)
    size = _text(separator) * max(count - 1, 0)
    check_text_length(size, "|join result")
    for item in items:
        size += _str_size(item)
        check_text_length(size, "|join result")
    # Each item made text, the list of them, the result (each escaped first
    # in the HTML part).
    return count + 2 * size * ((1 + ESCAPE_GROWTH) if _escaping(passed) else 1)


def _list(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # One slot per item; a string's characters outside Latin-1 become objects
    # of their own.
    if isinstance(value, str) and not value.isascii():
        return (1 + OBJECT) * len(value)
    return _count(value)


def _reverse(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # Text is copied reversed; a list is walked backwards (or was an
    # iterator, read into it and reversed).
    return len(value) if isinstance(value, str) else _count(value)


def _batch(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    count = _arg(args, kw, 0, "linecount")
    if isinstance(count, int) and count > MAX_SEQUENCE_PRODUCT:
        raise refuse(f"|batch of {count} items; at most {MAX_SEQUENCE_PRODUCT}")
    # Every item in some list, the last one filled up to ``count``.
    return 2 * _count(value) + (count if isinstance(count, int) and count > 0 else 0)


def _slice(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    count = _arg(args, kw, 0, "slices")
    if isinstance(count, int) and count > MAX_SEQUENCE_PRODUCT:
        raise refuse(f"|slice into {count} lists; at most {MAX_SEQUENCE_PRODUCT}")
    # A list of the items, every item in one slice, one fill per slice.
    return 2 * _count(value) + 2 * (count if isinstance(count, int) and count > 0 else 0)


def _sum(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    attribute = _arg(args, kw, 0, "attribute")
    start = _arg(args, kw, 1, "start", 0)
    count = _count(value)
    if not isinstance(start, SIZED):
        return count
    # sum(start=[]) concatenates: the total, and the total before the last item.
    getter = make_attrgetter(_environment(passed), attribute) if attribute is not None else None
    size = len(start)
    for item in value:
        if getter is not None:
            item = getter(item)
        size += len(item) if isinstance(item, SIZED) else 1
        if size > MAX_SEQUENCE_PRODUCT:
            raise refuse(f"|sum would build more than {MAX_SEQUENCE_PRODUCT} items")
    return count + 2 * size


def _key_texts(value: Any, passed: Any, attribute: Any, default: Any = None) -> int:
    """Characters of the keys ``ignore_case`` lowers: the items, or their attribute."""
    if isinstance(value, str):
        return (1 + OBJECT) * len(value)
    if attribute is None:
        return _lowered(value)
    getter = make_attrgetter(_environment(passed), attribute, default=default)
    return _lowered(getter(item) for item in value)


def _sort(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    case_sensitive = _arg(args, kw, 1, "case_sensitive", False)
    attribute = _arg(args, kw, 2, "attribute")
    parts = len(attribute.split(",")) if isinstance(attribute, str) else 1
    # The sorted list, one key list per item with one value per attribute,
    # each text value lower-cased (all alive while sorting).
    cost = _count(value) * (1 + OBJECT + parts) + sort_cost(value)
    if case_sensitive:
        return cost
    if parts == 1:
        return cost + _key_texts(value, passed, attribute)
    getter = make_multi_attrgetter(_environment(passed), attribute)
    return cost + sum(_lowered(getter(item)) for item in value)


def _unique(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    case_sensitive = _arg(args, kw, 0, "case_sensitive", False)
    attribute = _arg(args, kw, 1, "attribute")
    # The set of keys seen (each lowered), each compared with those before.
    cost = 4 * _count(value) + comparison_cost(value)
    return cost if case_sensitive else cost + _key_texts(value, passed, attribute)


def _min_max(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    case_sensitive = _arg(args, kw, 0, "case_sensitive", False)
    attribute = _arg(args, kw, 1, "attribute")
    # Every key computed (each lowered) and compared with the extreme one.
    cost = _count(value) + comparison_cost(value)
    return cost if case_sensitive else cost + _key_texts(value, passed, attribute)


def _groupby(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    attribute = _arg(args, kw, 0, "attribute")
    default = _arg(args, kw, 1, "default")
    case_sensitive = _arg(args, kw, 2, "case_sensitive", False)
    # Sorted by key, grouped by key again (each key computed twice), a list
    # per group and a tuple per group, twice when keys are lowered.
    cost = (3 + 2 * OBJECT) * _count(value) + sort_cost(value)
    if case_sensitive:
        return cost
    return cost + 2 * _key_texts(value, passed, attribute, default)


def _dictsort(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    if not isinstance(value, Mapping):
        return 0
    case_sensitive = _arg(args, kw, 0, "case_sensitive", False)
    position = 1 if _arg(args, kw, 1, "by", "key") == "value" else 0
    # A (key, value) tuple per item, the sorted list, the keys (lowered),
    # compared while sorting.
    cost = (2 + OBJECT) * len(value) + sort_cost(value)
    if case_sensitive:
        return cost
    return cost + _lowered(item[position] for item in value.items())


def _round(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # round(n, -p) and the 'ceil'/'floor' methods compute 10 ** p, a number
    # of p digits.
    precision = _arg(args, kw, 0, "precision", 0)
    if isinstance(precision, int) and abs(precision) > MAX_ROUND_DIGITS:
        raise refuse(f"|round precision of {precision}; at most {MAX_ROUND_DIGITS} digits")
    check_operand_bits(value, "|round")
    return 0


#: Every Jinja filter and what it costs; None: builds nothing, left unwrapped.
FILTER_COSTS: dict[str, FilterCost | None] = {
    "abs": None,
    "attr": None,
    "batch": _batch,
    "capitalize": _case_filter,
    "center": _center,
    "count": None,
    "d": None,
    "default": None,
    "dictsort": _dictsort,
    "e": _escape,
    "escape": _escape,
    "filesizeformat": None,
    "first": None,
    "float": None,
    "forceescape": _forceescape,
    "format": _format,
    "groupby": _groupby,
    "indent": _indent,
    "int": None,
    "items": None,
    "join": _join,
    "last": None,
    "length": None,
    "list": _list,
    "lower": _case_filter,
    "map": None,
    "max": _min_max,
    "min": _min_max,
    "pprint": _pprint,
    "random": None,
    "reject": None,
    "rejectattr": None,
    "replace": _replace,
    "reverse": _reverse,
    "round": _round,
    "safe": _safe,
    "select": None,
    "selectattr": None,
    "slice": _slice,
    "sort": _sort,
    "string": _string,
    "striptags": _striptags,
    "sum": _sum,
    "title": _title,
    "tojson": _tojson,
    "trim": _trim,
    "truncate": _truncate,
    "unique": _unique,
    "upper": _case_filter,
    "urlencode": _urlencode,
    "urlize": _urlize,
    "wordcount": _wordcount,
    "wordwrap": _wordwrap,
    "xmlattr": _xmlattr,
}

#: Filters that read all of their value: an iterator is read into a list
#: first, paid for item by item, so its items can be measured.
_READ_WHOLE = frozenset(
    {
        "batch",
        "dictsort",
        "groupby",
        "join",
        "list",
        "max",
        "min",
        "reverse",
        "slice",
        "sort",
        "sum",
        "unique",
    }
)


def guarded_filter(
    name: str, original: Callable[..., Any], cost: FilterCost, budget: Budget
) -> Callable[..., Any]:
    """``original`` with its cost charged to ``budget`` before every call."""
    passes = _PassArg.from_obj(original)
    skip = 0 if passes is None else 1
    reads_whole = name in _READ_WHOLE

    def guarded(*args: Any, **kwargs: Any) -> Any:
        # The hot path of every filter call: a cost function (a length and a
        # multiplication for text) and a subtraction.
        if len(args) > skip:
            value = args[skip]
            if reads_whole and type(value) not in _LENGTH_TYPES and isinstance(value, Iterator):
                value = list(budget.counted(value))
                args = (*args[:skip], value, *args[skip + 1 :])
            budget.left -= cost(value, args[skip + 1 :], kwargs, args[0] if skip else None)
            if budget.left < 0:
                budget.spend(0)
        try:
            result = original(*args, **kwargs)
        except AssertionError as exc:
            # Jinja checks some filter arguments with assert (truncate's length).
            raise TemplateRuntimeError(f"|{name}: {exc or 'invalid arguments'}") from None
        if isinstance(result, str) and len(result) > MAX_TEXT:
            check_text_length(len(result), f"|{name} result")
        return result

    if passes is not None:
        guarded.jinja_pass_arg = passes  # type: ignore[attr-defined]
    guarded.__name__ = getattr(original, "__name__", name)
    return guarded


def guard_filters(filters: dict[str, Any], budget: Budget) -> None:
    """Wrap every filter in its cost; drop any filter whose cost is not written down."""
    for name, original in list(filters.items()):
        if name not in FILTER_COSTS:
            del filters[name]
            continue
        cost = FILTER_COSTS[name]
        if cost is not None:
            filters[name] = guarded_filter(name, original, cost, budget)


# -- tests ------------------------------------------------------------------------


def _percent_test(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # odd, even, divisibleby compute ``value % number``: on text, printf.
    if isinstance(value, str):
        return check_percent(value, args[0] if args else 2, "'is' test")
    return 0


def _text_test(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # lower, upper test str(value).
    return _stringified(value)


def _comparing_test(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    # ==, <, in...: comparing lists reads every item, in one step in C.
    return comparison_cost(value) + sum(map(comparison_cost, args))


#: Every Jinja test and what it costs; None: builds nothing, left unwrapped.
TEST_COSTS: dict[str, FilterCost | None] = {
    "!=": _comparing_test,
    "<": _comparing_test,
    "<=": _comparing_test,
    "==": _comparing_test,
    ">": _comparing_test,
    ">=": _comparing_test,
    "boolean": None,
    "callable": None,
    "defined": None,
    "divisibleby": _percent_test,
    "eq": _comparing_test,
    "equalto": _comparing_test,
    "escaped": None,
    "even": _percent_test,
    "false": None,
    "filter": None,
    "float": None,
    "ge": _comparing_test,
    "greaterthan": _comparing_test,
    "gt": _comparing_test,
    "in": _comparing_test,
    "integer": None,
    "iterable": None,
    "le": _comparing_test,
    "lessthan": _comparing_test,
    "lower": _text_test,
    "lt": _comparing_test,
    "mapping": None,
    "ne": _comparing_test,
    "none": None,
    "number": None,
    "odd": _percent_test,
    "sameas": None,
    "sequence": None,
    "string": None,
    "test": None,
    "true": None,
    "undefined": None,
    "upper": _text_test,
}


def _guarded_test(
    original: Callable[..., Any], cost: FilterCost, budget: Budget
) -> Callable[..., Any]:
    passes = _PassArg.from_obj(original)
    skip = 0 if passes is None else 1

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > skip:
            budget.left -= cost(args[skip], args[skip + 1 :], kwargs, args[0] if skip else None)
            if budget.left < 0:
                budget.spend(0)
        return original(*args, **kwargs)

    if passes is not None:
        guarded.jinja_pass_arg = passes  # type: ignore[attr-defined]
    guarded.__name__ = getattr(original, "__name__", "test")
    return guarded


def guard_tests(tests: dict[str, Any], budget: Budget) -> None:
    """Wrap every test in its cost; drop any test whose cost is not written down."""
    for name, original in list(tests.items()):
        if name not in TEST_COSTS:
            del tests[name]
            continue
        cost = TEST_COSTS[name]
        if cost is not None:
            tests[name] = _guarded_test(original, cost, budget)


# -- methods of built-in types ----------------------------------------------------


def _own_length(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    # A copy of the owner (strip, copy, difference...).
    return len(owner)


def _case_method(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    return len(owner) if isinstance(owner, bytes) else _case(owner)


def _padded(name: str) -> MethodCost:
    def cost(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
        width = _arg(args, kw, 0, "width", 0)
        _check_width(width, f"str.{name}() width")
        for value in (*args[1:], *kw.values()):
            _check_width(value, f"str.{name}() width")
        return max(len(owner), width if isinstance(width, int) else 0)

    return cost


def _expandtabs(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    tab = _arg(args, kw, 0, "tabsize", 8)
    _check_width(tab, "str.expandtabs() tab size")
    if not isinstance(tab, int):
        return len(owner)
    tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
    size = len(owner) + tabs * max(tab, 0)
    check_text_length(size, "str.expandtabs() result")
    return size


def _translate(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    table = _arg(args, kw, 0, "table")
    if isinstance(owner, bytes):
        return len(owner)
    # The table maps a character to text: by a dict, or by a list indexed by
    # the character's code.
    values: Iterable[Any] = ()
    if isinstance(table, Mapping):
        values = table.values()
    elif isinstance(table, (list, tuple)):
        values = table
    longest = max((len(v) for v in values if isinstance(v, SIZED)), default=1)
    size = len(owner) * max(longest, 1)
    check_text_length(size, "str.translate() result")
    return size


def _replace_method(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    if len(args) < 2:
        return len(owner)
    old, new = args[0], args[1]
    count = args[2] if len(args) > 2 else kw.get("count")
    if isinstance(owner, bytes):
        if not isinstance(old, bytes) or not isinstance(new, bytes):
            return len(owner)
        growth = max(len(new) - len(old), 0) * (owner.count(old) if old else len(owner) + 1)
        size = len(owner) + growth
        check_text_length(size, "bytes.replace() result")
        return size
    escaped = isinstance(owner, Markup)
    new_size = _escaped(new) if escaped else _text(new)
    size = _replaced_size(owner, _text(old), new_size, str(old), count)
    return 2 * size if escaped else size


def _joined(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    if not args:
        return 0
    items = args[0] if isinstance(args[0], (list, tuple)) else list(args[0])
    escaped = isinstance(owner, Markup)
    size = len(owner) * max(len(items) - 1, 0)
    check_text_length(size, "str.join() result")
    for item in items:
        size += len(item) if isinstance(item, (str, bytes)) else printed_size(item)
        check_text_length(size, "str.join() result")
    # Markup escapes every item first, joins them, and copies the result.
    return len(items) + (3 * ESCAPE_GROWTH * size if escaped else size)


def _split(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    # At most one piece per character: its text, its object, its slot.
    return (2 + OBJECT) * len(owner) + OBJECT


def _partition(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    return len(owner) + 3 * OBJECT


def _encode(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    errors = _arg(args, kw, 1, "errors")
    return len(owner) * (NAME_GROWTH if errors == "namereplace" else ENCODE_GROWTH) + 8


def _decode(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    # 'backslashreplace' writes \xff for one byte.
    return 4 * len(owner) + 8


def _hex(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    return 3 * len(owner) + 2


def _from_arguments(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    # Built out of its arguments (maketrans, fromkeys, fromhex, update, union...).
    return 2 * sum(_count(value) for value in (*args, *kw.values())) + len(kw) + 1


def _grown_by_arguments(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    return len(owner) + _from_arguments(owner, args, kw)


def _list_sort(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    # list.sort calls its key itself, outside every check of the sandbox:
    # a method as key (``big.join``, ``'x'.center``) would run unpaid.
    if kw.get("key") is not None:
        raise SecurityError(
            "list.sort(key=...) would run its key unchecked; use |sort(attribute=...)"
        )
    return len(owner) + sort_cost(owner)


def _compares(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    # count, index, remove compare each item with the argument.
    return comparison_cost(owner) + sum(map(comparison_cost, args))


def _to_bytes(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    length = _arg(args, kw, 0, "length", 1)
    if isinstance(length, int):
        check_text_length(length, "int.to_bytes() result")
        return max(length, 0)
    return 0


def _markup(cost: MethodCost) -> MethodCost:
    """A Markup method: the str method's result, and its Markup copy."""

    def markup_cost(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
        return 2 * cost(owner, args, kw)

    return markup_cost


def _markup_escape(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    value = args[0] if args else ""
    return _stringified(value) + 2 * _escaped(value)


def _markup_striptags(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    return 11 * len(owner)


def _unchecked_format(owner: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> int:
    # The sandbox hands str.format out wrapped in checks; the bare method
    # reached some other way is not run.
    raise SecurityError("str.format can only be called as written: '...'.format(...)")


_TEXT_FREE = [
    "count",
    "endswith",
    "find",
    "index",
    "isalnum",
    "isalpha",
    "isascii",
    "isdecimal",
    "isdigit",
    "isidentifier",
    "islower",
    "isnumeric",
    "isprintable",
    "isspace",
    "istitle",
    "isupper",
    "rfind",
    "rindex",
    "startswith",
]

_STR_COSTS: dict[str, MethodCost | None] = {
    **dict.fromkeys(_TEXT_FREE),
    "capitalize": _case_method,
    "casefold": _case_method,
    "center": _padded("center"),
    "encode": _encode,
    "expandtabs": _expandtabs,
    "format": _unchecked_format,
    "format_map": _unchecked_format,
    "join": _joined,
    "ljust": _padded("ljust"),
    "lower": _case_method,
    "lstrip": _own_length,
    "maketrans": _from_arguments,
    "partition": _partition,
    "removeprefix": _own_length,
    "removesuffix": _own_length,
    "replace": _replace_method,
    "rjust": _padded("rjust"),
    "rpartition": _partition,
    "rsplit": _split,
    "rstrip": _own_length,
    "split": _split,
    "splitlines": _split,
    "strip": _own_length,
    "swapcase": _case_method,
    "title": _case_method,
    "translate": _translate,
    "upper": _case_method,
    "zfill": _padded("zfill"),
}

_BYTES_COSTS: dict[str, MethodCost | None] = {
    **{name: cost for name, cost in _STR_COSTS.items() if name in dir(bytes)},
    "decode": _decode,
    "fromhex": _from_arguments,
    "hex": _hex,
    "translate": _own_length,
}

_MARKUP_COSTS: dict[str, MethodCost | None] = {
    **{
        name: _markup(cost)
        for name, cost in _STR_COSTS.items()
        if cost is not None and isinstance(getattr(Markup, name, None), types.FunctionType)
    },
    "escape": _markup_escape,
    "join": _joined,
    "format": _unchecked_format,
    "format_map": _unchecked_format,
    "replace": _replace_method,
    "striptags": _markup_striptags,
    "unescape": _markup(_own_length),
}

_SET_COSTS: dict[str, MethodCost | None] = {
    "add": None,
    "clear": None,
    "copy": _own_length,
    "difference": _own_length,
    "difference_update": None,
    "discard": None,
    "intersection": _own_length,
    "intersection_update": None,
    "isdisjoint": None,
    "issubset": None,
    "issuperset": None,
    "pop": None,
    "remove": None,
    "symmetric_difference": _grown_by_arguments,
    "symmetric_difference_update": _from_arguments,
    "union": _grown_by_arguments,
    "update": _from_arguments,
}

_OWNERS: dict[str, dict[str, MethodCost | None]] = {
    "str": _STR_COSTS,
    "bytes": _BYTES_COSTS,
    "Markup": _MARKUP_COSTS,
    "list": {
        "append": None,
        "clear": None,
        "copy": _own_length,
        "count": _compares,
        "extend": _from_arguments,
        "index": _compares,
        "insert": None,
        "pop": None,
        "remove": _compares,
        "reverse": None,
        "sort": _list_sort,
    },
    "tuple": {"count": _compares, "index": _compares},
    "dict": {
        "clear": None,
        "copy": _own_length,
        "fromkeys": _from_arguments,
        "get": None,
        "items": None,
        "keys": None,
        "pop": None,
        "popitem": None,
        "setdefault": None,
        "update": _from_arguments,
        "values": None,
    },
    "set": _SET_COSTS,
    "frozenset": {name: cost for name, cost in _SET_COSTS.items() if name in dir(frozenset)},
    "int": {
        "as_integer_ratio": None,
        "bit_count": None,
        "bit_length": None,
        "conjugate": None,
        "from_bytes": None,
        "to_bytes": _to_bytes,
    },
    "float": {
        "as_integer_ratio": None,
        "conjugate": None,
        "fromhex": None,
        "hex": None,
        "is_integer": None,
    },
    "range": {"count": None, "index": None},
    "dict_keys": {"isdisjoint": None},
    "dict_items": {"isdisjoint": None},
    "dict_values": {},
}

#: Every method of a built-in type a template can reach, by qualified name
#: (``str.upper``, ``Markup.join``); None: builds nothing beyond its arguments.
METHOD_COSTS: dict[str, MethodCost | None] = {
    f"{owner}.{name}": cost for owner, table in _OWNERS.items() for name, cost in table.items()
}
#: The types :data:`METHOD_COSTS` covers completely (``bool`` is an ``int``).
AUDITED_TYPES: tuple[type, ...] = (
    str,
    bytes,
    Markup,
    list,
    tuple,
    dict,
    set,
    frozenset,
    int,
    float,
    range,
    type({}.keys()),
    type({}.items()),
    type({}.values()),
)
_AUDITED_OWNERS = frozenset(_OWNERS)
_METHOD_TYPES = (types.BuiltinMethodType, types.MethodType)


def method_cost(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """What calling ``function`` costs when it is a method of a built-in type.

    A method of an audited type that is not in :data:`METHOD_COSTS` is
    refused: nobody has written down what it may build.
    """
    kind = type(function)
    if kind is not types.BuiltinMethodType and kind is not types.MethodType:
        return 0
    name = getattr(function, "__qualname__", "")
    try:
        cost = METHOD_COSTS[name]
    except KeyError:
        if name.partition(".")[0] in _AUDITED_OWNERS:
            raise SecurityError(f"{name}() is not allowed in templates") from None
        return 0
    if cost is None:
        return 0
    return cost(function.__self__, args, kwargs)


def _lazy(argument: Any) -> bool:
    """A generator or built-in iterator (not the loop, which a macro may be given)."""
    return isinstance(argument, Iterator) and type(argument).__module__ == "builtins"


def counted_arguments(
    budget: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], int]:
    """Arguments with every iterator paid for item by item as the callee reads
    it, and what the arguments with a length (dict views) cost."""
    cost = 0
    if any(_lazy(argument) for argument in args):
        args = tuple(budget.counted(argument) if _lazy(argument) else argument for argument in args)
    for key, argument in kwargs.items():
        if _lazy(argument):
            kwargs[key] = budget.counted(argument)
    for argument in (*args, *kwargs.values()):
        if type(argument) in _LENGTH_TYPES and type(argument) not in _SIZED_TYPES:
            cost += len(argument)
    return args, kwargs, cost
