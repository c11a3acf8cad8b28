"""Every Jinja filter's cost, and the wrapper that charges it before the filter runs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from jinja2.exceptions import TemplateRuntimeError

from promomail.templating.template import render_limits
from promomail.templating.template.costs.list_filters import (
    _batch,
    _dictsort,
    _groupby,
    _join,
    _list,
    _min_max,
    _reverse,
    _round,
    _slice,
    _sort,
    _sum,
    _unique,
)
from promomail.templating.template.costs.measures import (
    _LENGTH_TYPES,
    FilterCost,
)
from promomail.templating.template.costs.text_filters import (
    _case_filter,
    _center,
    _escape,
    _forceescape,
    _format,
    _indent,
    _pprint,
    _replace,
    _safe,
    _string,
    _striptags,
    _title,
    _tojson,
    _trim,
    _truncate,
    _urlencode,
    _urlize,
    _wordcount,
    _wordwrap,
    _xmlattr,
)
from promomail.templating.template.limits import (
    Budget,
    check_text_length,
)

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


def passes_first_argument(original: Callable[..., Any]) -> bool:
    """Whether Jinja hands ``original`` a context, eval context or environment
    before its value.

    Jinja's public decorators (``pass_context``, ``pass_eval_context``,
    ``pass_environment``) record that on the function itself, as the
    attribute ``jinja_pass_arg`` that Jinja (and its sandbox) reads before
    every call; a function without it gets its value first.
    """
    return hasattr(original, "jinja_pass_arg")


def marked_as(wrapper: Callable[..., Any], original: Callable[..., Any]) -> None:
    """Give ``wrapper`` the marks the decorators put on ``original``, so Jinja
    calls it the same way: ``functools.update_wrapper`` copies the function's
    attributes, nothing else."""
    functools.update_wrapper(wrapper, original, assigned=(), updated=("__dict__",))


def guarded_filter(
    name: str, original: Callable[..., Any], cost: FilterCost, budget: Budget
) -> Callable[..., Any]:
    """``original`` with its cost charged to ``budget`` before every call."""
    skip = 1 if passes_first_argument(original) else 0
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
        if isinstance(result, str) and len(result) > render_limits.LIMITS.text:
            check_text_length(len(result), f"|{name} result")
        return result

    marked_as(guarded, original)
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
