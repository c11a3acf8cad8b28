"""What the methods of built-in types cost (``str.join``, ``list.sort``...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jinja2.exceptions import SecurityError
from markupsafe import Markup

from promomail.templating.template.costs.measures import (
    ENCODE_GROWTH,
    ESCAPE_GROWTH,
    NAME_GROWTH,
    OBJECT,
    MethodCost,
    _arg,
    _case,
    _count,
    _escaped,
    _stringified,
    _text,
)
from promomail.templating.template.costs.text_filters import (
    _replaced_size,
)
from promomail.templating.template.limits import (
    SIZED,
    _check_width,
    check_text_length,
    comparison_cost,
    printed_size,
    sort_cost,
)


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
