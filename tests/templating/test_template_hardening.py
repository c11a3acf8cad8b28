"""Templates written to probe the sandbox: each class of trick is refused cleanly.

Aliases of the code functions, nesting the Python compiler chokes on,
allocations hidden behind ``*`` widths or folded constants, Python reprs in
customer mail, and partials: each is an InvalidTemplate naming the template
(and line), found before anything is rendered, or fails just that
recipient, and never builds a large value first.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import pytest
from markupsafe import Markup
from sqlalchemy import Engine

from promomail.templating.errors import InvalidTemplate, RecipientFailed
from promomail.templating.mailing.checking import check_template, preview, preview_recipients
from promomail.templating.mailing.sources import PreviewCodes
from promomail.templating.template.client import Client
from promomail.templating.template.environment import make_environment
from promomail.templating.template.message import MessageTemplate
from tests.support.fuzz_child import run_fuzz_child
from tests.support.render_helpers import (
    counts,
    customer_ids,
    pool_with_codes,
    render,
    write_recipients,
)
from tests.support.template_escapes import ESCAPES, MARKER, refusal


def _client(**fields: str) -> Client:
    return Client("cust-1", {"id": "cust-1", "first_name": "Ada", **fields}, PreviewCodes(None, {}))


def _render(source: str, name: str = "probe.j2", **variables: object) -> dict[str, str]:
    return MessageTemplate(name, source).render({"client": _client(), **variables})


def _template_error(source: str, name: str = "probe.j2") -> InvalidTemplate:
    with pytest.raises(InvalidTemplate) as refused:
        MessageTemplate(name, source)
    return refused.value


# -- 1. the code functions only through the literal call --------------------------

#: Ways to reach a code function other than ``client.promocode('POOL')`` written out.
ALIASES = {
    "item": "{{ client['promocode']('spring') }}",
    "item-last": "{{ client['last_promocode']('spring') }}",
    "attr-filter": "{{ (client|attr('promocode'))('spring') }}",
    "set": "{% set p = client.promocode %}{{ p('spring') }}",
    "set-per-customer": "{% set p = client.promocodes %}{{ p('spring')|join }}",
    "dunder-call": "{{ client.promocode.__call__('spring') }}",
    "macro-argument": "{% macro m(f) %}{{ f('spring') }}{% endmacro %}{{ m(client.promocode) }}",
    "filter-argument": "{{ 'spring'|map(client.promocode)|list }}",
    "map-attribute": "{{ [client]|map(attribute='promocode')|list }}",
    "selectattr": "{{ [client]|selectattr('promocode')|list }}",
    "client-in-dict": "{% set d = {'c': client} %}{{ d.c.promocode('spring') }}",
    "client-in-list": "{{ [client][0].promocode('spring') }}",
    "client-to-macro": "{% macro m(c) %}{{ c.promocode('spring') }}{% endmacro %}{{ m(client) }}",
    "client-rebound": "{% set client = namespace(promocode=none) %}{{ client.promocode('x') }}",
    "client-loop-var": "{% for client in [1] %}{{ client }}{% endfor %}",
    "client-with": "{% with client = 1 %}{{ client }}{% endwith %}",
    "client-dynamic-item": "{{ client['promo' ~ 'code']('spring') }}",
    "client-format": "{{ '{0.promocode}'.format(client) }}",
    "call-block": "{% call client.promocode('spring') %}x{% endcall %}",
    "method-printed": "{{ client.promocode }}",
    "method-tested": "{% if client.promocode is callable %}yes{% endif %}",
}


@pytest.mark.parametrize("source", list(ALIASES.values()), ids=list(ALIASES))
def test_alias_forms_are_template_errors_with_their_line(source: str) -> None:
    error = _template_error("Hello\n" + source)
    assert error.template == "probe.j2"
    assert error.line == 2, str(error)
    assert str(error).startswith("probe.j2, line 2: ")


def test_literal_calls_still_work_and_are_analysed() -> None:
    template = MessageTemplate(
        "ok.j2",
        "{{ client.promocode('spring') }} {{ client.last_promocode('old') }} "
        "{{ client.promocodes('multi')|join(',') }} {{ client['first_name'] }} {{ client.id }}",
    )
    usage = template.usage
    assert usage.issues_from == {"spring": 1, "multi": 1}
    assert usage.reissues_from == {"old": 1}
    body = template.render({"client": _client()})["body"]
    assert "spring" in body and "Ada" in body and "cust-1" in body


@pytest.mark.parametrize(
    "source",
    [
        "{{ other.promocode('spring') }}",
        "{{ other['promocode']('spring') }}",
        "{{ (other|attr('promocode'))('spring') }}",
        "{% set p = other.promocode %}{{ p('spring') }}",
        "{{ [other]|map(attribute='promocode')|first }}",
        "{{ '{0.promocode}'.format(other) }}",
    ],
)
def test_the_sandbox_never_hands_out_a_code_function(source: str) -> None:
    # Defence in depth: a Client reached under another name (a caller's
    # mistake the static checks cannot see) still gives no bound method.
    template = MessageTemplate("probe.j2", source)
    with pytest.raises(RecipientFailed, match=r"not allowed in templates|undefined value"):
        template.render({"client": _client(), "other": _client()})


def test_environment_refuses_code_functions_as_attributes_and_items() -> None:
    env = make_environment()
    client = _client()
    for fetched in (env.getattr(client, "promocode"), env.getitem(client, "last_promocode")):
        with pytest.raises(Exception, match="unsafe"):
            str(fetched)


def test_alias_found_by_check_preview_and_render_before_codes_move(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 5)
    template = tmp_path / "alias.j2"
    template.write_text(
        "Hi {{ client.first_name }}\n{{ client['promocode']('spring') }}\n", encoding="utf-8"
    )
    recipients = write_recipients(tmp_path, customer_ids(3))
    before = counts(engine, "spring")

    report = check_template(engine, str(template), recipients)
    assert not report.ok
    assert report.problems[0].line == 2
    assert "client['promocode']" in report.problems[0].message

    with pytest.raises(InvalidTemplate, match="line 2"):
        preview(engine, str(template), preview_recipients(recipients, None, 3))
    with pytest.raises(InvalidTemplate, match="line 2"):
        render(db_url, str(template), recipients, "m-alias", tmp_path / "out.jsonl")

    assert counts(engine, "spring") == before


# -- 2. nesting the compiler chokes on ---------------------------------------------

NESTING = {
    "for-25": "{% for a in [1] %}" * 25 + "x" + "{% endfor %}" * 25,
    "if-120": "{% if true %}" * 120 + "x" + "{% endif %}" * 120,
    "parentheses-1000": "{{ " + "(" * 1000 + "1" + ")" * 1000 + " }}",
    "brackets-1000": "{{ " + "[" * 1000 + "]" * 1000 + " }}",
    "not-1000": "{{ " + "not " * 1000 + "true }}",
    "sum-5000": "{{ " + " + ".join(["1"] * 5000) + " }}",
    "filters-3000": "{{ 'x'" + "|upper" * 3000 + " }}",
    "attributes-3000": "{{ client" + ".a" * 3000 + " }}",
    "number-5000-digits": "{{ " + "9" * 5000 + " }}",
    "macros-30": "{% macro m() %}" * 30 + "{% endmacro %}" * 30,
}


@pytest.mark.parametrize("source", list(NESTING.values()), ids=list(NESTING))
def test_deep_nesting_is_a_template_error(source: str, engine: Engine, tmp_path: Path) -> None:
    error = _template_error(source)
    assert str(error).startswith("probe.j2")
    assert "Traceback" not in str(error)

    path = tmp_path / "deep.j2"
    path.write_text(source, encoding="utf-8")
    report = check_template(engine, str(path))
    assert not report.ok and report.problems[0].message == error.reason


def test_nesting_within_the_bounds_compiles() -> None:
    source = "{% for a in [1] %}" * 10 + "x" + "{% endfor %}" * 10
    assert _render(source) == {"body": "x"}
    assert _render("{{ " + "(" * 30 + "1" + ")" * 30 + " }}") == {"body": "1"}


# -- 3. every bound holds before the memory is taken ---------------------------------

#: Each would allocate hundreds of megabytes (or gigabytes) unchecked.
ALLOCATIONS = {
    "percent-star-width": ("{{ '%*d' % (10**9, 1) }}", "'%' field width"),
    "percent-star-precision": ("{{ '%.*f' % (10**9, 1) }}", "'%' field precision"),
    "percent-precision": ("{{ '%.999999999f' % 1 }}", "'%' field precision"),
    "percent-many-fields": ("{{ ('%9999d' * 200) % ((1,) * 200) }}", "'%' result"),
    "format-nested-width": ("{{ '{:{}}'.format(1, 10**9) }}", "format field width"),
    "format-nested-precision": ("{{ '{:.{}f}'.format(1, 10**9) }}", "format field width"),
    "format-many-fields": ("{{ ('{:9999}' * 200).format(*range(200)) }}", "str.format() result"),
    "format-filter-star": ("{{ '%*s'|format(10**9, 'a') }}", "|format field width"),
    "center-literal": ("{{ 'x'|center(1000000000) }}", "|center width"),
    "center-power": ("{{ 'x'|center(10**9) }}", "|center width"),
    "ljust": ("{{ 'x'.ljust(10**9) }}", "str.ljust() width"),
    "rjust-literal": ("{{ 'x'.rjust(1000000000) }}", "str.rjust() width"),
    "indent-many-lines": (
        "{% set s = 'a\\n' * 50000 %}{{ (s ~ s)|indent(5000) }}",
        "|indent result",
    ),
    "indent-string": ("{% set s = 'a\\n' * 50000 %}{{ s|indent('x' * 5000) }}", "|indent result"),
    "wordwrap-wrapstring": (
        "{{ ('a ' * 50000)|wordwrap(1, wrapstring='x' * 50000) }}",
        "|wordwrap result",
    ),
    "join-filter": ("{{ range(10000)|join('x' * 100000) }}", "|join result"),
    "replace-filter": ("{{ ('a' * 100000)|replace('a', 'b' * 1000) }}", "str.replace() result"),
    "expandtabs": ("{{ ('\\t' * 100000).expandtabs(10000) }}", "str.expandtabs() result"),
    "translate": (
        "{{ ('a' * 100000).translate({97: 'b' * 100000}) }}",
        "str.translate() result",
    ),
    "batch-literal": ("{{ [1]|batch(1000000000, 'x')|list|length }}", "|batch of"),
    "slice-literal": ("{{ [1]|slice(1000000000)|list|length }}", "|slice into"),
    "tojson-indent": ("{{ [1, [2]]|tojson(indent=1000000000) }}", "|tojson indent"),
    "int-squaring": (
        "{% set ns = namespace(x=3) %}{% for i in range(40) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
        "'*' result would exceed",
    ),
    "print-huge-list": ("{% set x = ['a' * 100000] * 100000 %}{{ x }}", "printed value"),
    "concat-huge-list": ("{% set x = ['a' * 100000] * 100000 %}{{ 'x' ~ x }}", "printed value"),
    "filter-block": (
        "{% filter upper %}{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}{% endfilter %}",
        "a block's output",
    ),
    "set-block": (
        "{% set x %}{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}{% endset %}{{ x }}",
        "a block's output",
    ),
}

#: Each keeps many small values alive; the work budget ends it.
ACCUMULATIONS = {
    "append-in-nested-loops": (
        "{% set l = [] %}{% for i in range(10000) %}{% for j in range(10000) %}"
        "{% set _ = l.append(i ~ j) %}{% endfor %}{% endfor %}{{ l|length }}"
    ),
    "extend-doubling": (
        "{% set l = [1] %}{% for i in range(40) %}{% set _ = l.extend(l) %}{% endfor %}"
    ),
    "namespace-chain": (
        "{% set ns = namespace(p=none) %}{% for i in range(10000) %}"
        "{% set ns.p = namespace(p=ns.p, s=('x' * 100000) ~ i) %}{% endfor %}ok"
    ),
    "list-chain-of-slices": (
        "{% set ns = namespace(p=none) %}{% set big = 'x' * 100000 %}"
        "{% for i in range(10000) %}{% set ns.p = [ns.p, big[i:]] %}{% endfor %}ok"
    ),
    "dict-literal-chain": (
        "{% set ns = namespace(p=none) %}{% for i in range(10000) %}{% for j in range(100) %}"
        "{% set ns.p = {'p': ns.p, 'a': i, 'b': j, 'c': [i, j]} %}{% endfor %}{% endfor %}ok"
    ),
    "macro-output": (
        "{% macro m() %}{% for i in range(10000) %}{% for j in range(10000) %}x"
        "{% endfor %}{% endfor %}{% endmacro %}{{ m()|length }}"
    ),
}


@pytest.mark.parametrize(("source", "reason"), list(ALLOCATIONS.values()), ids=list(ALLOCATIONS))
def test_size_bounds_hold_before_allocating(source: str, reason: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(RecipientFailed, match="render limit") as failed:
            _render(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason in str(failed.value)
    assert peak < 16 * 1024 * 1024, peak


@pytest.mark.parametrize("source", list(ACCUMULATIONS.values()), ids=list(ACCUMULATIONS))
def test_work_budget_ends_accumulating_templates(source: str) -> None:
    with pytest.raises(RecipientFailed, match="the message needs more than"):
        _render(source)


def test_accumulating_templates_stay_well_under_400_mb() -> None:
    # Measured in a child process whose address space is capped at 1 GiB: an
    # allocation past the cap would fail there (MemoryError), not pass unnoticed.
    result = run_fuzz_child("budget", json.dumps(list(ACCUMULATIONS.values())))
    assert result["unexpected"] == [], result
    assert result["peak_mb"] < 400, result


def test_the_budget_is_per_message() -> None:
    template = MessageTemplate(
        "loop.j2", "{% for i in range(10000) %}{% set x = i ~ '' %}{% endfor %}done"
    )
    for _ in range(100):  # 5 million units in all: more than one message's budget
        assert template.render({"client": _client()}) == {"body": "done"}


# -- 4. no Python reprs in customer mail -----------------------------------------------

REPRS = {
    "range": "{{ range }}",
    "namespace-class": "{{ namespace }}",
    "namespace": "{{ namespace(a=1) }}",
    "dict-class": "{{ dict }}",
    "method": "{{ 'x'.upper }}",
    "list-method": "{{ [].append }}",
    "generator": "{{ [1, 2]|map('string') }}",
    "reverse-iterator": "{{ [1, 2]|reverse }}",
    "in-list": "{{ [range] }}",
    "in-dict": "{{ {'a': 'x'.upper} }}",
    "concat": "{{ 'x' ~ range }}",
    "concat-folded": "{{ 'x' ~ ([1]|reverse) }}",
    "percent": "{{ '%s' % range }}",
    "percent-tuple": "{{ '%s %s' % (1, range) }}",
    "format": "{{ '{}'.format(range) }}",
    "format-conversion": "{{ '{!r}'.format(range) }}",
    "string-filter": "{{ range|string }}",
    "upper-filter": "{{ range|upper }}",
    "join-filter": "{{ [range, 1]|join(', ') }}",
    "join-attribute": "{{ ['x']|join(attribute='upper') }}",
    "join-method": "{{ ', '.join([range|string]) }}",
    "markup-join": "{{ ('x'|safe).join(['a', range]) }}",
    "pprint": "{{ range|pprint }}",
    "self": "{{ self }}",
    "block-reference": "{% block subject %}s{% endblock %}{% block text %}{{ self.subject }}"
    "{% endblock %}",
    "macro": "{% macro m() %}{% endmacro %}{{ m }}",
    "loop": "{% for i in [1] %}{{ loop }}{% endfor %}",
    "dict-view": "{{ {'a': 1}.items() }}",
    "format-filter": "{{ '%s'|format(range) }}",
    "xmlattr": "{{ {'a': range}|xmlattr }}",
}


@pytest.mark.parametrize("source", list(REPRS.values()), ids=list(REPRS))
def test_python_objects_are_never_printed(source: str) -> None:
    with pytest.raises(RecipientFailed) as failed:
        _render(source)
    reason = str(failed.value)
    assert "cannot print" in reason, reason
    assert " at 0x" not in reason and "object at" not in reason


@pytest.mark.parametrize("source", ["{{ cycler }}", "{{ lipsum }}", "{{ joiner }}"])
def test_removed_globals_are_undefined(source: str) -> None:
    with pytest.raises(RecipientFailed, match="undefined value"):
        _render(source)


def test_plain_values_print() -> None:
    source = (
        "{{ 'a' }} {{ 1 }} {{ 2.5 }} {{ true }} {{ none }} {{ [1, 'b', [none]] }} "
        "{{ {'k': [1]} }} {{ (1, 2) }} {{ markup }} {{ data }} {{ 'x' ~ 1 ~ [2] }} "
        "{{ '%s/%s' % (1, [2]) }} {{ '{}|{}'.format('a', {'b': 1}) }} {{ [1, 2]|join('-') }} "
        "{{ [1, 2]|map('string')|list }} {{ {'b': 2, 'a': 1}|dictsort }}"
    )
    body = _render(source, markup=Markup("<b>"), data={"n": [1, 2.5, True]})["body"]
    assert body == (
        "a 1 2.5 True None [1, 'b', [None]] {'k': [1]} (1, 2) <b> {'n': [1, 2.5, True]} "
        "x1[2] 1/[2] a|{'b': 1} 1-2 ['1', '2'] [('a', 1), ('b', 2)]"
    )


# -- 5. partials from the template's own folder ------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    (root / "parts").mkdir(parents=True)
    (root / "footer.j2").write_text(
        "-- {{ client.first_name }}, your code {{ client.promocode('footer-pool') }}\n",
        encoding="utf-8",
    )
    (root / "parts" / "macros.j2").write_text(
        "{% macro greet(name) %}Hello {{ name }}{% endmacro %}"
        "{% macro old() %}{{ client.last_promocode('old-pool') }}{% endmacro %}",
        encoding="utf-8",
    )
    (tmp_path / "secret.txt").write_text("root:x:0:0", encoding="utf-8")
    return root


def _write(folder: Path, source: str, name: str = "message.j2") -> str:
    path = folder / name
    path.write_text(source, encoding="utf-8")
    return str(path)


def test_partials_render_and_are_analysed(folder: Path) -> None:
    path = _write(
        folder,
        "{% block subject %}{% import 'parts/macros.j2' as m %}"
        "{{ m.greet(client.first_name) }}{% endblock %}\n"
        "{% block text %}{% from 'parts/macros.j2' import old with context %}"
        "Body {{ old() }}\n{% include 'footer.j2' %}{% endblock %}\n",
    )
    template = MessageTemplate.from_file(path)
    usage = template.usage
    assert usage.issues_from == {"footer-pool": 3}  # the include's line in message.j2
    assert usage.reissues_from == {"old-pool": 1}  # the first import's line
    assert sorted(usage.partials) == ["footer.j2", "parts/macros.j2"]
    parts = template.render({"client": _client()})
    assert parts["subject"] == "Hello Ada"
    assert "-- Ada, your code [[promocode from footer-pool]]" in parts["text"]


def test_check_reports_partials_and_their_pools(engine: Engine, folder: Path) -> None:
    pool_with_codes(engine, "footer-pool", 3)
    path = _write(folder, "Hi\n{% include 'footer.j2' %}")
    report = check_template(engine, path)
    assert report.ok, report.problems
    assert report.partials == ["footer.j2"]
    assert [(p.ref, p.line) for p in report.pools] == [("footer-pool", 2)]


def test_preflight_counts_pools_used_in_partials(
    engine: Engine, db_url: str, folder: Path, tmp_path: Path
) -> None:
    pool_with_codes(engine, "footer-pool", 2)
    path = _write(folder, "Hi\n{% include 'footer.j2' %}")
    recipients = write_recipients(tmp_path, customer_ids(3))
    before = counts(engine, "footer-pool")
    with pytest.raises(Exception, match="footer-pool"):
        render(db_url, path, recipients, "m-partial", tmp_path / "out.jsonl")
    assert counts(engine, "footer-pool") == before


PARTIAL_REFUSALS = {
    "absolute": ("{% include '/etc/passwd' %}", "relative path"),
    "parent": ("{% include '../secret.txt' %}", "relative path"),
    "inner-parent": ("{% include 'parts/../../secret.txt' %}", "relative path"),
    "missing": ("{% include 'nope.j2' %}", "no such file"),
    "dynamic": ("{% include name %}", "string literal"),
    "dynamic-concat": ("{% include 'foot' ~ 'er.j2' %}", "string literal"),
    "list": ("{% include ['footer.j2'] %}", "string literal"),
    "import-dynamic": ("{% import name as m %}", "string literal"),
    "extends": ("{% extends 'footer.j2' %}", "{% extends %} is not supported"),
    "backslash": ("{% include 'parts\\\\macros.j2' %}", "relative path"),
}


@pytest.mark.parametrize(
    ("source", "reason"), list(PARTIAL_REFUSALS.values()), ids=list(PARTIAL_REFUSALS)
)
def test_partials_outside_the_folder_are_refused(folder: Path, source: str, reason: str) -> None:
    path = _write(folder, "line one\n" + source)
    with pytest.raises(InvalidTemplate) as refused:
        MessageTemplate.from_file(path)
    assert refused.value.template == path and refused.value.line == 2
    assert reason in str(refused.value)
    assert "root:" not in str(refused.value)


def test_symlink_out_of_the_folder_is_refused(folder: Path) -> None:
    (folder / "link.j2").symlink_to(folder.parent / "secret.txt")
    path = _write(folder, "{% include 'link.j2' %}")
    with pytest.raises(InvalidTemplate, match="outside the template's folder"):
        MessageTemplate.from_file(path)


def test_a_partial_is_checked_like_the_template(folder: Path, engine: Engine) -> None:
    (folder / "bad.j2").write_text("ok\n{% set p = client.promocode %}", encoding="utf-8")
    path = _write(folder, "{% include 'bad.j2' %}")
    with pytest.raises(InvalidTemplate) as refused:
        MessageTemplate.from_file(path)
    assert refused.value.template == str((folder / "bad.j2").resolve())
    assert refused.value.line == 2
    report = check_template(engine, path)
    assert "bad.j2, line 2" in report.problems[0].message

    (folder / "syntax.j2").write_text("{% if %}", encoding="utf-8")
    with pytest.raises(InvalidTemplate, match=r"syntax\.j2, line 1: syntax error"):
        MessageTemplate.from_file(_write(folder, "{% include 'syntax.j2' %}"))


def test_partials_that_include_themselves_are_refused(folder: Path) -> None:
    (folder / "a.j2").write_text("{% include 'b.j2' %}", encoding="utf-8")
    (folder / "b.j2").write_text("{% include 'a.j2' %}", encoding="utf-8")
    with pytest.raises(InvalidTemplate, match="includes itself"):
        MessageTemplate.from_file(_write(folder, "{% include 'a.j2' %}"))


def test_text_templates_cannot_include() -> None:
    env = make_environment()
    with pytest.raises(InvalidTemplate, match="no folder"):
        env.parse("{% include 'footer.j2' %}")


# -- every known payload, and fuzzing ---------------------------------------------------


@pytest.mark.parametrize(
    "payload", [*ESCAPES.values(), *ALIASES.values()], ids=[*ESCAPES, *ALIASES]
)
def test_every_known_payload_is_refused(payload: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    reason = refusal(payload.replace(MARKER, str(marker)))
    assert reason.startswith("payload.j2")
    assert " at 0x" not in reason
    assert not marker.exists()


def test_fuzzed_templates_give_only_template_errors_in_bounded_memory() -> None:
    """Hypothesis builds templates from Jinja2's grammar (nesting, operators,
    filters, format strings, literals of extreme sizes) and runs each through
    check, preview and render in a child capped at 1 GiB of address space."""
    examples = os.environ.get("PROMOMAIL_FUZZ_EXAMPLES", "400")
    result = run_fuzz_child("fuzz", examples)
    print(
        f"fuzzed {result['cases']} templates {result['outcomes']}; peak {result['peak_mb']} MB; "
        f"largest step {result['largest_step_mb']} MB"
    )
    assert result["unexpected"] == [], result["unexpected"]
    assert result["cases"] == int(examples)
    assert result["peak_mb"] < 400, result


def test_fuzzed_partials_keep_nothing_from_one_recipient_for_the_next() -> None:
    """Invariant 10 as a property: partials keeping state in every way a template
    can (lists, dicts, namespaces, nested lists; any import form, in blocks or
    through an include), fed generated values: recipient B's message after A's is
    exactly B's message rendered alone."""
    examples = os.environ.get("PROMOMAIL_FUZZ_EXAMPLES", "300")
    result = run_fuzz_child("isolation", examples)
    print(f"isolation: {result['cases']} cases {result['outcomes']}; peak {result['peak_mb']} MB")
    assert result["unexpected"] == [], result["unexpected"]
    assert result["cases"] == int(examples)
    assert result["outcomes"]["rendered"] > int(examples) // 10, result["outcomes"]
