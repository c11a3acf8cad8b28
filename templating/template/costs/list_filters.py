"""What the filters that read or build lists cost (join, sort, group, sum...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2.filters import make_attrgetter, make_multi_attrgetter

from promomail.templating.template import render_limits
from promomail.templating.template.costs.measures import (
    _LENGTH_TYPES,
    ESCAPE_GROWTH,
    OBJECT,
    _arg,
    _count,
    _environment,
    _escaping,
    _lowered,
    _str_size,
    _text,
)
from promomail.templating.template.limits import (
    SIZED,
    check_operand_bits,
    check_text_length,
    comparison_cost,
    sort_cost,
)
from promomail.templating.template.render_limits import refuse


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
    if isinstance(count, int) and count > render_limits.LIMITS.sequence_product:
        raise refuse(f"|batch of {count} items; at most {render_limits.LIMITS.sequence_product}")
    # Every item in some list, the last one filled up to ``count``.
    return 2 * _count(value) + (count if isinstance(count, int) and count > 0 else 0)


def _slice(value: Any, args: tuple[Any, ...], kw: dict[str, Any], passed: Any) -> int:
    count = _arg(args, kw, 0, "slices")
    if isinstance(count, int) and count > render_limits.LIMITS.sequence_product:
        raise refuse(f"|slice into {count} lists; at most {render_limits.LIMITS.sequence_product}")
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
        if size > render_limits.LIMITS.sequence_product:
            raise refuse(
                f"|sum would build more than {render_limits.LIMITS.sequence_product} items"
            )
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
    if isinstance(precision, int) and abs(precision) > render_limits.LIMITS.round_digits:
        raise refuse(
            f"|round precision of {precision}; at most {render_limits.LIMITS.round_digits} digits"
        )
    check_operand_bits(value, "|round")
    return 0
