"""Every Jinja test's cost, and the wrapper that charges it before the test runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from promomail.templating.template.costs.filters import (
    marked_as,
    passes_first_argument,
)
from promomail.templating.template.costs.measures import (
    FilterCost,
    _stringified,
)
from promomail.templating.template.limits import (
    Budget,
    check_percent,
    comparison_cost,
)


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
    skip = 1 if passes_first_argument(original) else 0

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > skip:
            budget.left -= cost(args[skip], args[skip + 1 :], kwargs, args[0] if skip else None)
            if budget.left < 0:
                budget.spend(0)
        return original(*args, **kwargs)

    marked_as(guarded, original)
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
