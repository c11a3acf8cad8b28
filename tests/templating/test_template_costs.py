"""Every filter, test and method a template reaches pays its peak memory before it runs.

Each case renders a large input (half a megabyte of text, or a list holding it
2,000 times) in a child process capped at 1 GiB of address space, so a bound
that does not hold shows as "out of memory" rather than a swapping machine; the
child reports each case's outcome and its own peak resident size.
"""

from __future__ import annotations

import json
import os
import types
from typing import Any

import jinja2.filters
import jinja2.tests
import pytest
from jinja2.exceptions import SecurityError

from promomail.templating.errors import RecipientFailed
from promomail.templating.mailing.sources import PreviewCodes
from promomail.templating.template import costs, limits
from promomail.templating.template.client import Client
from promomail.templating.template.environment import make_environment
from promomail.templating.template.message import MessageTemplate
from tests.support.fuzz_child import run_fuzz_child

#: Half a megabyte of text, and lists, dicts and items holding it thousands of times.
LARGE = (
    "{% set s = 'x' * 100000 %}{% set s = s ~ s ~ s ~ s ~ s %}"
    "{% set h = '<' * 100000 %}{% set h = h ~ h ~ h ~ h ~ h %}"
    "{% set l = [s] * 2000 %}{% set items = [{'k': s}] * 2000 %}"
    "{% set d = {} %}{% for i in range(2000) %}{% set _ = d.update({i: s}) %}{% endfor %}"
)

REFUSED = "refused"
RENDERED = "rendered"
#: The recipient fails for a reason of its own (an undefined value), in bounded memory.
FAILED = "failed"

#: filter name: (expression over the large values, what must happen).
FILTER_CASES: dict[str, tuple[str, str]] = {
    "abs": ("(-(10 ** 1000))|abs > 0", RENDERED),
    "attr": ("(l|attr('copy'))()|length", RENDERED),
    "batch": ("l|batch(100000000, s)|list|length", REFUSED),
    "capitalize": ("l|capitalize", REFUSED),
    "center": ("s|center(1000000000)", REFUSED),
    "count": ("l|count", RENDERED),
    "d": ("l|d|length", RENDERED),
    "default": ("missing|default(l)|length", RENDERED),
    "dictsort": ("d|dictsort(false, 'value')|length", REFUSED),
    "e": ("h|e|length", REFUSED),
    "escape": ("l|escape", REFUSED),
    "filesizeformat": ("(10 ** 300)|filesizeformat", RENDERED),
    "first": ("l|first|length", RENDERED),
    "float": ("s|float", RENDERED),
    "forceescape": ("l|forceescape", REFUSED),
    "format": ("'%s'|format(l)", REFUSED),
    "groupby": ("items|groupby('k')|length", REFUSED),
    "indent": ("(h|replace('<', '\\n'))|indent(5000)", REFUSED),
    "int": ("s|int", RENDERED),
    "items": ("d|items|list|length", RENDERED),
    "join": ("l|join", REFUSED),
    "last": ("l|last|length", RENDERED),
    "length": ("l|length", RENDERED),
    "list": ("s|list|length", RENDERED),
    "lower": ("l|lower", REFUSED),
    "map": ("l|map('length')|list|length", RENDERED),
    "max": ("l|max|length", REFUSED),
    "min": ("items|min(attribute='k')|length", REFUSED),
    "pprint": ("l|pprint", REFUSED),
    "random": ("l|random|length", RENDERED),
    "reject": ("l|reject|list|length", RENDERED),
    "rejectattr": ("items|rejectattr('k')|list|length", RENDERED),
    "replace": ("s|replace('x', 'yy')", REFUSED),
    "reverse": ("l|reverse|list|length", RENDERED),
    "round": ("5|round(-100000000)", REFUSED),
    "safe": ("l|safe", REFUSED),
    "select": ("l|select|list|length", RENDERED),
    "selectattr": ("items|selectattr('k')|list|length", RENDERED),
    "slice": ("l|slice(1000000000)|list|length", REFUSED),
    "sort": ("l|sort|length", REFUSED),
    "string": ("l|string", REFUSED),
    "striptags": ("l|striptags", REFUSED),
    "sum": ("([l] * 1000)|select|sum(start=[])|length", REFUSED),
    "title": ("l|title", REFUSED),
    "tojson": ("l|tojson", REFUSED),
    "trim": ("l|trim", REFUSED),
    "truncate": ("l|truncate(10)", REFUSED),
    "unique": ("l|unique|list|length", REFUSED),
    "upper": ("l|upper", REFUSED),
    "urlencode": ("l|urlencode", REFUSED),
    "urlize": ("('www.a.com ' * 10000)|urlize(target=s)|length", REFUSED),
    "wordcount": ("l|wordcount", REFUSED),
    "wordwrap": ("('a ' * 50000)|wordwrap(1, wrapstring='x' * 50000)", REFUSED),
    "xmlattr": ("{'a': l}|xmlattr", REFUSED),
}

#: test name: (expression, what must happen). Comparing tests pay for every
#: item and character they may read (a comparison of lists is one step in C
#: that the render's timer cannot stop): over the large list, refused.
TEST_CASES: dict[str, tuple[str, str]] = {
    "!=": ("l != l", REFUSED),
    "<": ("l is lt l", REFUSED),
    "<=": ("l is le l", REFUSED),
    "==": ("l is eq l", REFUSED),
    ">": ("l is gt l", REFUSED),
    ">=": ("l is ge l", REFUSED),
    "boolean": ("l is boolean", RENDERED),
    "callable": ("l is callable", RENDERED),
    "defined": ("l is defined", RENDERED),
    "divisibleby": ("'%0999999999d' is divisibleby 3", REFUSED),
    "eq": ("l is eq l", REFUSED),
    "equalto": ("l is equalto l", REFUSED),
    "escaped": ("l is escaped", RENDERED),
    "even": ("'%0999999999d' is even", REFUSED),
    "false": ("l is false", RENDERED),
    "filter": ("'upper' is filter", RENDERED),
    "float": ("l is float", RENDERED),
    "ge": ("l is ge l", REFUSED),
    "greaterthan": ("l is greaterthan l", REFUSED),
    "gt": ("l is gt l", REFUSED),
    "in": ("s is in l", REFUSED),
    "integer": ("l is integer", RENDERED),
    "iterable": ("l is iterable", RENDERED),
    "le": ("l is le l", REFUSED),
    "lessthan": ("l is lessthan l", REFUSED),
    "lower": ("l is lower", REFUSED),
    "lt": ("l is lt l", REFUSED),
    "mapping": ("d is mapping", RENDERED),
    "ne": ("l is ne l", REFUSED),
    "none": ("l is none", RENDERED),
    "number": ("l is number", RENDERED),
    "odd": ("'%0999999999d' is odd", REFUSED),
    "sameas": ("l is sameas l", RENDERED),
    "sequence": ("l is sequence", RENDERED),
    "string": ("s is string", RENDERED),
    "test": ("'odd' is test", RENDERED),
    "true": ("l is true", RENDERED),
    "undefined": ("l is undefined", RENDERED),
    "upper": ("l is upper", REFUSED),
}

#: Methods of built-in types that grew without bound.
METHOD_CASES: dict[str, tuple[str, str]] = {
    "str.translate-list": ("s.translate([s] * 200)|length", REFUSED),
    "str.translate-dict": ("s.translate({120: s})|length", REFUSED),
    "str.join-iterator": ("''.join(l|select)|length", REFUSED),
    "str.encode-namereplace": (
        "(s|replace('x', '\\u20ac')).encode('ascii', 'namereplace')",
        REFUSED,
    ),
    "str.split": ("s.split('x')|length", REFUSED),
    "markup.join": ("('x'|safe).join([h[:100000]] * 5)|length", REFUSED),
    "int.to_bytes": ("(1).to_bytes(900000000, 'big')|length", REFUSED),
    "list.sort-key": ("[900000000].sort(key='x'.center)", REFUSED),
    "list.extend-iterator": (
        "{% set m = [] %}{% for i in range(2000) %}{% set _ = m.extend(l|select) %}{% endfor %}",
        REFUSED,
    ),
    "dict.copy": ("[d.copy(), d.copy()]|length", RENDERED),
}


#: Large values given as a filter's arguments: shown in an error message or
#: turned into text by the filter, they are paid for or cut short first.
ARGUMENT_CASES: dict[str, tuple[str, str]] = {
    "join attribute named by a list": ("d|join(',', attribute=l)", FAILED),
    "sum attribute named by a list": ("(range(10)|list)|sum(attribute=l, start=[])", FAILED),
    "max attribute named by a list": ("'abc'|max(attribute=l)", FAILED),
    "a list as an item's key": ("d[l]", FAILED),
    "urlize target": ("'a.b'|urlize(target=l)", REFUSED),
    "urlize rel": ("'a.b'|urlize(rel=l)", REFUSED),
}


def _source(expression: str) -> str:
    if expression.startswith("{%"):
        return LARGE + expression + "ok"
    return LARGE + "{{ " + expression + " }}"


def _cases() -> dict[str, tuple[str, str]]:
    return {
        **{f"filter-{name}": case for name, case in FILTER_CASES.items()},
        **{f"test-{name}": case for name, case in TEST_CASES.items()},
        **{f"method-{name}": case for name, case in METHOD_CASES.items()},
        **{f"argument-{name}": case for name, case in ARGUMENT_CASES.items()},
    }


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, Any]]:
    """Every case rendered once, in one memory-capped child: outcome and peak."""
    cases = _cases()
    result = run_fuzz_child("costs", json.dumps([_source(expr) for expr, _ in cases.values()]))
    return dict(zip(cases, result["each"], strict=True))


# -- the tables are complete ------------------------------------------------------------


def test_every_jinja_filter_and_test_has_a_cost_and_a_case() -> None:
    assert set(jinja2.filters.FILTERS) == set(costs.FILTER_COSTS)
    assert set(jinja2.tests.TESTS) == set(costs.TEST_COSTS)
    assert set(FILTER_CASES) == set(costs.FILTER_COSTS)
    assert set(TEST_CASES) == set(costs.TEST_COSTS)


def test_every_method_of_a_reachable_builtin_type_has_a_cost() -> None:
    missing = []
    for kind in costs.AUDITED_TYPES:
        for name in dir(kind):
            if name.startswith("_"):
                continue
            member = getattr(kind, name)
            if not callable(member):
                continue
            qualified = getattr(member, "__qualname__", f"{kind.__name__}.{name}")
            if qualified not in costs.METHOD_COSTS:
                missing.append(qualified)
    assert missing == []


def test_the_environment_offers_only_costed_filters_and_tests() -> None:
    env = make_environment()
    assert set(env.filters) <= set(costs.FILTER_COSTS)
    assert set(env.tests) <= set(costs.TEST_COSTS)
    filters = {"upper": jinja2.filters.FILTERS["upper"], "brand_new": lambda value: value}
    tests = {"odd": jinja2.tests.TESTS["odd"], "brand_new": lambda value: True}
    budget = limits.Budget()
    costs.guard_filters(filters, budget)
    costs.guard_tests(tests, budget)
    assert set(filters) == {"upper"}
    assert set(tests) == {"odd"}


def test_a_method_missing_from_the_table_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(costs.METHOD_COSTS, "str.upper")
    with pytest.raises(SecurityError, match=r"str\.upper\(\) is not allowed"):
        costs.method_cost("x".upper, (), {})
    # Methods of types outside the audit (the loop, macros) are not refused.
    assert costs.method_cost(types.SimpleNamespace().__eq__, (), {}) == 0


# -- each is paid before it allocates ------------------------------------------------------


@pytest.mark.parametrize("case", list(_cases()))
def test_large_inputs_are_paid_for_before_they_allocate(
    case: str, measured: dict[str, dict[str, Any]]
) -> None:
    _, expected = _cases()[case]
    result = measured[case]
    outcome = result["outcome"]
    assert "out of memory" not in outcome and "MemoryError" not in outcome, result
    if expected == REFUSED:
        assert outcome.startswith("failed: ") and (
            "render limit" in outcome or "not allowed in templates" in outcome
        ), result
    elif expected == FAILED:
        assert outcome.startswith("failed: ") and len(outcome) < 2_000, result
    else:
        assert outcome == RENDERED, result
    # The large values themselves take a few MB; the 1 GiB cap is far away.
    assert result["peak_mb"] < 160, result


def _render(source: str) -> dict[str, str]:
    client = Client("c", {"id": "c"}, PreviewCodes(None, {}))
    return MessageTemplate("costs.j2", source).render({"client": client})


def test_typical_uses_render_while_large_ones_are_refused() -> None:
    source = (
        "{{ ['b', 'a', 'C']|sort|join(', ') }}|{{ {'b': 1, 'A': 2}|dictsort|first|first }}|"
        "{{ ['a', 'A', 'b']|unique|list|length }}|{{ ['b', 'A']|max }}|"
        "{{ [{'k': 'x'}, {'k': 'X'}]|groupby('k')|length }}|{{ 'a b'|title }}|"
        "{{ '<b>'|e }}|{{ 'visit www.example.com'|urlize|length > 20 }}|"
        "{{ {'a': 1}|tojson }}|{{ 'x'.center(5) }}|{{ 'a,b'.split(',')|length }}|"
        "{{ 3 is odd }}|{{ 'abc' is lower }}|{{ ('\u0130' * 3)|lower|length }}"
    )
    assert _render(source) == {
        "body": 'a, b, C|A|2|b|1|A B|&lt;b&gt;|True|{"a": 1}|  x  |2|True|True|6'
    }
    with pytest.raises(RecipientFailed, match="render limit: the message needs more than"):
        # Ten references to half a megabyte: ten lower-cased copies, 5 million characters.
        _render(
            "{% set s = 'x' * 100000 %}{% set s = s ~ s ~ s ~ s ~ s %}{{ ([s] * 10)|sort|length }}"
        )


def test_iterators_handed_to_a_call_are_paid_for_but_the_loop_is_itself() -> None:
    source = (
        "{% macro m(l) %}{{ l.index }}{% endmacro %}{% for i in [1, 2] %}{{ m(loop) }}{% endfor %}"
    )
    assert _render(source) == {"body": "12"}
    with pytest.raises(RecipientFailed, match="render limit: the message needs more than"):
        _render(
            "{% set big = [1] * 100000 %}{% set m = [] %}{% for i in range(100) %}"
            "{% set _ = m.extend(big|select) %}{% endfor %}"
        )


# -- fuzzing -------------------------------------------------------------------------------


def test_fuzzed_large_filter_chains_stay_in_bounded_memory() -> None:
    """Hypothesis chains the filters, tests and methods above over large values;
    each case's own peak is measured in a child capped at 1 GiB."""
    examples = os.environ.get("PROMOMAIL_FUZZ_EXAMPLES", "200")
    result = run_fuzz_child("fuzz-costs", examples)
    each = result["each"]
    peaks = sorted(each, key=lambda case: -case["peak_mb"])
    outcomes: dict[str, int] = {}
    for case in each:
        outcomes[case["outcome"]] = outcomes.get(case["outcome"], 0) + 1
    print(
        f"{len(each)} cases {outcomes}; peak per case: max {peaks[0]['peak_mb']} MB, "
        f"median {peaks[len(peaks) // 2]['peak_mb']} MB; highest: "
        + "; ".join(f"{case['peak_mb']} MB {case['source'][:80]}" for case in peaks[:3])
    )
    assert result["unexpected"] == [], result["unexpected"]
    assert len(each) == int(examples)
    assert peaks[0]["peak_mb"] < 256, peaks[:3]
