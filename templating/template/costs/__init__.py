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
value whose exact size is known and exceeds ``LIMITS.text`` (or
``LIMITS.sequence_product`` items) is refused outright.

The tables are complete on purpose: a filter or test Jinja adds in a later
version, or a method a later Python adds to ``str``, is refused until
someone writes down what it costs (``tests/templating/test_template_costs.py`` fails
first). Filters and tests that build nothing (``default``, ``length``,
``select``...) are ``None`` and stay unwrapped, so they cost no time either.

An input that is an iterator (``map``, ``select``, ``reverse``...) has no
length to charge: filters that read all of it first take it as a list, paid
item by item as it is read (:meth:`Budget.counted`), and method calls are
handed it the same way.

One module per kind of callee: :mod:`.measures` (the units), :mod:`.text_filters`
and :mod:`.list_filters` (what each filter costs), :mod:`.filters` (the filter
table and its wrapper), :mod:`.jinja_tests` (tests), :mod:`.methods` and
:mod:`.method_table` (methods of built-in types).
"""

from __future__ import annotations

from promomail.templating.template.costs.filters import FILTER_COSTS, guard_filters, guarded_filter
from promomail.templating.template.costs.jinja_tests import TEST_COSTS, guard_tests
from promomail.templating.template.costs.measures import ESCAPE_GROWTH, FilterCost, MethodCost
from promomail.templating.template.costs.method_table import (
    AUDITED_TYPES,
    METHOD_COSTS,
    counted_arguments,
    method_cost,
)

__all__ = [
    "AUDITED_TYPES",
    "ESCAPE_GROWTH",
    "FILTER_COSTS",
    "METHOD_COSTS",
    "TEST_COSTS",
    "FilterCost",
    "MethodCost",
    "counted_arguments",
    "guard_filters",
    "guard_tests",
    "guarded_filter",
    "method_cost",
]
