"""Child process of the template fuzz tests: memory capped, results as JSON.

``python tests/support/fuzz_templates.py fuzz N`` runs N hypothesis-generated
templates through check, preview and render; ``... isolation N`` renders N
generated messages whose partials keep state, for recipient A and then B, and
compares B's message with B's rendered alone; ``... budget JSON`` renders the
given sources; ``... fuzz-costs N`` chains the filters, tests and methods of
class 2 over large values and ``... costs JSON`` renders the given sources,
both noting each case's own peak. The address space is capped at 1 GiB
first, so a bound that does not hold shows as a MemoryError (reported),
never as a machine that swaps; the last line printed is a JSON document:
cases run, peak resident memory in MB, and every unexpected outcome.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

ADDRESS_SPACE = 1 << 30

resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
sys.setrecursionlimit(1000)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from promomail.pools.store.db import StoreConfig, open_engine  # noqa: E402
from promomail.templating.errors import (  # noqa: E402
    InvalidTemplate,
    RecipientError,
    RecipientFailed,
    RenderLimitExceeded,
)
from promomail.templating.mailing.checking import check_template, preview  # noqa: E402
from promomail.templating.mailing.recipients import Recipient  # noqa: E402
from promomail.templating.mailing.sources import PreviewCodes  # noqa: E402
from promomail.templating.template.client import Client  # noqa: E402
from promomail.templating.template.message import MessageTemplate  # noqa: E402

ALLOWED = (InvalidTemplate, RecipientError, RenderLimitExceeded)

SIZES = ["0", "1", "3", "80", "10000", "10001", "100000", "1000000", "10**9", "2**31", "-5"]
NUMBERS = st.one_of(
    st.sampled_from(SIZES),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(1, 6000).map(lambda digits: "9" * digits),
)
TEXT = st.text(alphabet="ab %{}:*.0123456789dsfrx<>!\\n'", max_size=12).map(
    lambda s: "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
)
FORMATS = st.sampled_from(
    [
        "'%*d'",
        "'%.*f'",
        "'%s'",
        "'%(a)s'",
        "'%05d %s'",
        "'%.999999999f'",
        "'{}'",
        "'{:{}}'",
        "'{:>{}}'",
        "'{0}{1}'",
        "'{!r}'",
        "'{a}'",
        "'{:.{}f}'",
        "'%-10000s|'",
    ]
)
NAMES = st.sampled_from(
    [
        "client.first_name",
        "client.id",
        "client['first_name']",
        "client.missing",
        "x",
        "i",
        "loop",
        "range",
        "namespace",
        "dict",
        "self",
        "caller",
        "varargs",
        "cycler",
        "lipsum",
        "client.promocode('spring')",
        "client.last_promocode('spring')",
        "client.promocodes('spring')",
    ]
)
ALIASES = st.sampled_from(
    [
        "client['promocode']('spring')",
        "client|attr('promocode')",
        "client.promocode",
        "client.promocode.__call__('x')",
        "[client]|map(attribute='promocode')|list",
        "client",
    ]
)
FILTERS = st.sampled_from(
    [
        "upper",
        "string",
        "list",
        "length",
        "reverse",
        "sort",
        "unique",
        "first",
        "sum",
        "int",
        "float",
        "trim",
        "title",
        "pprint",
        "tojson",
        "dictsort",
        "e",
        "safe",
        "striptags",
        "wordcount",
        "urlencode",
        "map('string')",
        "join",
        "center({n})",
        "indent({n})",
        "wordwrap({n})",
        "truncate({n})",
        "batch({n}, 'x')",
        "slice({n})",
        "round({n})",
        "join({e})",
        "replace('a', {e})",
        "format({e}, {e})",
        "tojson(indent={n})",
        "indent({e})",
        "wordwrap(1, wrapstring={e})",
        "default({e})",
        "attr({e})",
        "select",
        "xmlattr",
    ]
)
METHODS = st.sampled_from(
    [
        "upper()",
        "split()",
        "center({n})",
        "ljust({n})",
        "zfill({n})",
        "expandtabs({n})",
        "replace('a', {e})",
        "format({e}, {e})",
        "format_map({{'a': {e}}})",
        "join({e})",
        "count('a')",
        "append({e})",
        "extend({e})",
        "items()",
        "__class__",
        "_source",
    ]
)
OPERATORS = st.sampled_from(
    ["+", "-", "*", "/", "//", "%", "**", "~", "and", "or", "==", "<", "in"]
)


def _fill(pattern: str, draw: Any, inner: st.SearchStrategy[str]) -> str:
    while "{n}" in pattern:
        pattern = pattern.replace("{n}", draw(NUMBERS), 1)
    while "{e}" in pattern:
        pattern = pattern.replace("{e}", draw(inner), 1)
    return pattern.replace("{{", "{").replace("}}", "}")


@st.composite
def _compound(draw: Any, inner: st.SearchStrategy[str]) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return f"({draw(inner)} {draw(OPERATORS)} {draw(inner)})"
    if kind == 1:
        return f"{draw(inner)}|{_fill(draw(FILTERS), draw, inner)}"
    if kind == 2:
        return f"({draw(inner)}).{_fill(draw(METHODS), draw, inner)}"
    if kind == 3:
        items = draw(st.lists(inner, max_size=4))
        return "[" + ", ".join(items) + "]"
    if kind == 4:
        return f"{{'a': {draw(inner)}, 'b': {draw(inner)}}}"
    if kind == 5:
        return f"{draw(FORMATS)} % ({draw(inner)}, {draw(inner)})"
    if kind == 6:
        return f"{draw(FORMATS)}.format({draw(inner)}, {draw(inner)})"
    if kind == 7:
        return f"range({draw(NUMBERS)})"
    if kind == 8:
        return f"{draw(inner)}[{draw(NUMBERS)}:{draw(NUMBERS)}]"
    return f"(not {draw(inner)})"


EXPRESSIONS = st.recursive(
    st.one_of(NUMBERS, TEXT, FORMATS, NAMES, ALIASES, st.sampled_from(["true", "none", "[]"])),
    lambda inner: _compound(inner),
    max_leaves=12,
)


@st.composite
def _statement(draw: Any, inner: st.SearchStrategy[str]) -> str:
    kind = draw(st.integers(0, 8))
    expression: str = draw(EXPRESSIONS)
    body: str = draw(inner)
    if kind == 0:
        return f"{{% if {expression} %}}{body}{{% else %}}{draw(inner)}{{% endif %}}"
    if kind == 1:
        return f"{{% for i in {expression} %}}{body}{{% endfor %}}"
    if kind == 2:
        return f"{{% set x = {expression} %}}{body}"
    if kind == 3:
        return f"{{% macro m(a) %}}{body}{{% endmacro %}}{{{{ m({expression}) }}}}"
    if kind == 4:
        return f"{{% filter upper %}}{body}{{% endfilter %}}"
    if kind == 5:
        return f"{{% set x %}}{body}{{% endset %}}{{{{ x ~ {expression} }}}}"
    if kind == 6:
        depth = int(draw(st.sampled_from([2, 11, 13, 25, 120])))
        return "{% if true %}" * depth + body + "{% endif %}" * depth
    if kind == 7:
        depth = int(draw(st.sampled_from([5, 39, 41, 200, 1000])))
        return "{{ " + "(" * depth + expression + ")" * depth + " }}"
    outer = draw(NUMBERS)
    return (
        f"{{% for i in range({outer}) %}}{{% for j in {expression} %}}{body}"
        "{% endfor %}{% endfor %}"
    )


TEMPLATES = st.recursive(
    st.one_of(
        EXPRESSIONS.map(lambda e: "{{ " + e + " }}"),
        st.text(alphabet="ab {}%#()[]'\"|~*.\n", max_size=20),
        st.just("Hello {{ client.first_name }}\n"),
    ),
    lambda inner: st.one_of(
        _statement(inner), st.lists(inner, min_size=2, max_size=3).map("".join)
    ),
    max_leaves=6,
)


#: What a partial may keep at its top level, and how its macro adds to it.
KEPT_STATE = st.sampled_from(
    [
        ("{% set kept = [] %}", "{{ kept.append(x) or '' }}"),
        ("{% set kept = {} %}", "{{ kept.update({'k' ~ kept|length: x}) or '' }}"),
        ("{% set kept = namespace(v=[]) %}", "{% set kept.v = kept.v + [x] %}"),
        ("{% set kept = [[]] %}", "{{ kept[0].append(x) or '' }}{{ kept.append(x) or '' }}"),
    ]
)
#: Ways a message reaches the partial: every form of import, in and out of blocks.
USES = st.sampled_from(
    [
        "{% import 'state.j2' as s %}{{ s.keep(VALUE) }}{{ s.kept }}",
        "{% from 'state.j2' import keep, kept %}{{ keep(VALUE) }}{{ kept }}",
        "{% import 'state.j2' as s with context %}{{ s.keep(VALUE) }}{{ s.kept }}",
        "{% block subject %}{% import 'state.j2' as s %}{{ s.keep(VALUE) }}{% endblock %}"
        "{% block text %}{% from 'state.j2' import kept %}{{ kept }}{% endblock %}",
        "{% include 'user.j2' %}",
    ]
)


@st.composite
def _stateful(draw: Any) -> dict[str, str]:
    """A message, the partial keeping state and a partial using it, as files."""
    keeper, adds = draw(KEPT_STATE)
    value = draw(st.sampled_from(["client.first_name ~ ", "client.id ~ ", ""]))
    # Half the cases keep plain values, so most messages render in full.
    value += "(" + draw(st.one_of(TEXT, NAMES, EXPRESSIONS)) + ")"
    use = draw(USES).replace("VALUE", value)
    top = draw(st.one_of(st.just(""), TEMPLATES))
    return {
        "state.j2": f"{keeper}{top}{{% macro keep(x) %}}{adds}{{% endmacro %}}",
        "user.j2": use.replace("{% include 'user.j2' %}", "")
        or "{% import 'state.j2' as s %}{{ s.keep(client.id) }}{{ s.kept }}",
        "message.j2": use + draw(st.one_of(st.just(""), TEMPLATES)),
    }


class PerCustomerCodes:
    """Codes named after their customer: a code shown to the wrong one shows."""

    def promocode(self, customer_id: str, pool: str) -> str:
        return f"{pool}-{customer_id}"

    def last_promocode(self, customer_id: str, pool: str) -> str:
        return f"last-{pool}-{customer_id}"

    def promocodes(self, customer_id: str, pool: str) -> list[str]:
        return [self.promocode(customer_id, pool)]


def peak_kib() -> int:
    """This process's peak resident size (VmHWM).

    Not ``ru_maxrss``: Linux carries that over from the process that forked
    this one, so a large test runner would be counted as this script's peak.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


class Run:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.engine = open_engine(StoreConfig(f"sqlite:///{folder / 'fuzz.db'}"))
        self.cases = 0
        self.unexpected: list[dict[str, str]] = []
        self.outcomes = {"template error": 0, "rendered": 0, "recipient failed": 0}
        #: The case that raised the peak most, for a look at what costs memory.
        self.largest_step = (0, "")

    def measured(self, source: str, step: Any) -> None:
        before = peak_kib()
        step(source)
        grown = peak_kib() - before
        if grown > self.largest_step[0]:
            self.largest_step = (grown, source[:2000])

    def note(self, source: str, where: str, problem: str) -> None:
        self.unexpected.append({"source": source[:2000], "where": where, "problem": problem})

    def render(self, source: str, where: str = "render") -> None:
        client = Client("c1", {"id": "c1", "first_name": "Ada"}, PreviewCodes(None, {}))
        try:
            template = MessageTemplate(str(self.folder / "fuzz.j2"), source)
            template.render({"client": client})
            self.outcomes["rendered"] += 1
        except ALLOWED:
            self.outcomes["template error"] += 1
        except RecipientFailed as exc:
            self.outcomes["recipient failed"] += 1
            if "out of memory" in str(exc) or " at 0x" in str(exc):
                self.note(source, where, str(exc))
        except BaseException as exc:
            self.note(source, where, f"{type(exc).__name__}: {exc}"[:500])

    def check_and_preview(self, source: str) -> None:
        path = self.folder / "fuzz.j2"
        path.write_text(source, encoding="utf-8")
        try:
            check_template(self.engine, str(path))
        except ALLOWED:
            pass
        except BaseException as exc:
            self.note(source, "check", f"{type(exc).__name__}: {exc}"[:500])
        try:
            for shown in preview(self.engine, str(path), [Recipient("c1", {"id": "c1"}, 0)]):
                if shown.parts and any(" at 0x" in text for text in shown.parts.values()):
                    self.note(source, "preview", "a memory address in the output")
                if shown.error and "out of memory" in shown.error:
                    self.note(source, "preview", shown.error)
        except ALLOWED:
            pass
        except BaseException as exc:
            self.note(source, "preview", f"{type(exc).__name__}: {exc}"[:500])

    def message_of(self, template: MessageTemplate, who: str, name: str) -> object:
        client = Client(who, {"id": who, "first_name": name}, PerCustomerCodes())
        try:
            return template.render({"client": client})
        except RecipientFailed as exc:
            return f"failed: {exc}"

    def isolated(self, source: str) -> None:
        """Recipient B's message after A's is the message B gets rendered alone."""
        files: dict[str, str] = json.loads(source)
        for name, text in files.items():
            (self.folder / name).write_text(text, encoding="utf-8")
        try:
            shared = MessageTemplate.from_file(self.folder / "message.j2")
            alone = MessageTemplate.from_file(self.folder / "message.j2")
        except ALLOWED:
            self.outcomes["template error"] += 1
            return
        self.message_of(shared, "a", "Ada")
        after = self.message_of(shared, "b", "Bob")
        own = self.message_of(alone, "b", "Bob")
        if "took longer" in str(after) + str(own):
            return  # the clock, not the template, decided: not comparable
        self.outcomes["rendered" if isinstance(own, dict) else "recipient failed"] += 1
        if after != own:
            self.note(source, "isolation", f"after a: {after!r:.300}; alone: {own!r:.300}")

    def report(self) -> None:
        peak = peak_kib() // 1024
        print(
            json.dumps(
                {
                    "cases": self.cases,
                    "outcomes": self.outcomes,
                    "peak_mb": peak,
                    "largest_step_mb": self.largest_step[0] // 1024,
                    "largest_step_source": self.largest_step[1],
                    "unexpected": self.unexpected,
                }
            )
        )


def explore(examples: int) -> settings:
    """The same ``examples`` cases every run, with no time or health limits."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


def fuzz(run: Run, examples: int) -> None:
    @explore(examples)
    @given(TEMPLATES)
    def one(source: str) -> None:
        run.cases += 1
        run.measured(source, run.check_and_preview)
        run.measured(source, run.render)

    one()


def isolation(run: Run, examples: int) -> None:
    @explore(examples)
    @given(_stateful())
    def one(files: dict[str, str]) -> None:
        run.cases += 1
        run.measured(json.dumps(files), run.isolated)

    one()


# -- class 2: what filters, tests and methods build out of large values ------------

#: Large values a template can build within every size bound, set up before the
#: expression under test: 500,000 characters (ASCII, escapable, non-ASCII that
#: grows when lower-cased), lists holding one of them thousands of times, items
#: with attributes, a dict.
LARGE_VALUES = (
    "{% set s = 'x' * 100000 %}{% set s = s ~ s ~ s ~ s ~ s %}"
    "{% set h = '<&' * 50000 %}{% set h = h ~ h ~ h ~ h ~ h %}"
    "{% set w = '\u0130' * 100000 %}{% set w = w ~ w %}"
    "{% set l = [s] * 2000 %}{% set lw = [w] * 2000 %}{% set lh = [h] * 2000 %}"
    "{% set ln = [l] * 100 %}{% set items = [{'k': s, 'n': 1, 'w': w}] * 2000 %}"
    "{% set d = {} %}{% for i in range(2000) %}{% set _ = d.update({i: s}) %}{% endfor %}"
)
LARGE_NAMES = st.sampled_from(
    [
        "s",
        "h",
        "w",
        "l",
        "lw",
        "lh",
        "ln",
        "items",
        "d",
        "[s, w]",
        "(s, s)",
        "d.values()",
        "(l|select)",
        "(items|map(attribute='k'))",
        "range(10000)",
        "client.first_name",
    ]
)
LARGE_ARGUMENTS = st.sampled_from(
    [
        "s",
        "w",
        "h",
        "l",
        "1",
        "3",
        "80",
        "10000",
        "'k'",
        "'w'",
        "'k,n'",
        "'0'",
        "true",
        "false",
        "none",
        "1000000000",
    ]
)
#: Filters and methods that copy their items' text, or grow with an argument.
CLASS2_STEPS = st.sampled_from(
    [
        "|sort",
        "|sort(attribute={a})",
        "|sort(false, {a})",
        "|sort(attribute='k,w')",
        "|dictsort",
        "|dictsort(false, 'value')",
        "|groupby({a})",
        "|groupby('k', default={a})",
        "|groupby('k', case_sensitive=true)",
        "|unique",
        "|unique(attribute={a})",
        "|min",
        "|max",
        "|max(attribute={a})",
        "|join",
        "|join({a})",
        "|join(',', attribute={a})",
        "|map('upper')|list",
        "|map('lower')|list",
        "|map('e')|list",
        "|map('title')|list",
        "|map(attribute={a})|list",
        "|select|list",
        "|reverse|list",
        "|list",
        "|sum(start=[])",
        "|sum(attribute={a}, start=[])",
        "|tojson",
        "|tojson(indent=16)",
        "|pprint",
        "|wordcount",
        "|title",
        "|upper",
        "|lower",
        "|capitalize",
        "|e",
        "|forceescape",
        "|safe",
        "|string",
        "|xmlattr",
        "|urlencode",
        "|urlize",
        "|urlize(target={a})",
        "|urlize(rel={a})",
        "|wordwrap({a})",
        "|wordwrap(1, wrapstring={a})",
        "|indent({a})",
        "|replace('x', {a})",
        "|replace('<', {a}, 3)",
        "|format({a})",
        "|center({a})",
        "|truncate({a})",
        "|striptags",
        "|trim",
        "|batch({a}, {a})|list",
        "|slice({a}, {a})|list",
        "|items|list",
        "|first",
        "|last",
        "|length",
        "|round({a})",
        ".upper()",
        ".lower()",
        ".casefold()",
        ".title()",
        ".split()",
        ".splitlines()",
        ".encode('unicode_escape')",
        ".encode('ascii', 'namereplace')",
        ".translate({{120: {a}}})",
        ".translate([{a}] * 200)",
        ".join({a})",
        ".replace('x', {a})",
        ".center({a})",
        ".copy()",
        ".expandtabs({a})",
        ".partition('x')",
        ".zfill({a})",
    ]
)
CLASS2_TESTS = st.sampled_from(
    [
        " is lower",
        " is upper",
        " is odd",
        " is divisibleby {a}",
        " is in {a}",
        " is sameas {a}",
        " == {a}",
        " is sequence",
        " is string",
    ]
)


@st.composite
def _class2_expression(draw: Any) -> str:
    expression: str = draw(LARGE_NAMES)
    for _ in range(draw(st.integers(1, 3))):
        step = draw(CLASS2_STEPS)
        while "{a}" in step:
            step = step.replace("{a}", draw(LARGE_ARGUMENTS), 1)
        expression = f"({expression}{step.replace('{{', '{').replace('}}', '}')})"
    if draw(st.booleans()):
        test = draw(CLASS2_TESTS).replace("{a}", draw(LARGE_ARGUMENTS))
        expression = f"({expression}{test})"
    return expression


CLASS2_TEMPLATES = _class2_expression().flatmap(
    lambda expression: st.sampled_from(
        [
            f"{LARGE_VALUES}{{{{ {expression} }}}}",
            f"{LARGE_VALUES}{{% set r = {expression} %}}ok",
            f"{LARGE_VALUES}{{% for x in {expression} %}}{{% endfor %}}ok",
        ]
    )
)


def reset_peak() -> None:
    """Start this process's peak resident size (VmHWM) afresh from what it holds now."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")


def render_each_measured(run: Run, sources: list[str]) -> list[dict[str, Any]]:
    """Render each source alone and note its outcome and its own peak (MB)."""
    measured = []
    for source in sources:
        run.cases += 1
        before, noted = dict(run.outcomes), len(run.unexpected)
        reset_peak()
        run.render(source, "costs")
        peak = peak_kib() // 1024
        if len(run.unexpected) > noted:
            outcome = run.unexpected[-1]["problem"]
        else:
            outcome = next(name for name, count in run.outcomes.items() if count != before[name])
        measured.append(
            {"source": source[len(LARGE_VALUES) :][:300], "outcome": outcome, "peak_mb": peak}
        )
    return measured


def render_failures(run: Run, sources: list[str]) -> list[dict[str, Any]]:
    """Each source's outcome (the recipient failure's reason, if any) and its own peak."""
    client = Client("c1", {"id": "c1", "first_name": "Ada"}, PreviewCodes(None, {}))
    results = []
    for source in sources:
        run.cases += 1
        reset_peak()
        try:
            MessageTemplate(str(run.folder / "costs.j2"), source).render({"client": client})
            outcome = "rendered"
        except RecipientFailed as exc:
            outcome = f"failed: {exc}"
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        results.append({"outcome": outcome[:300], "peak_mb": peak_kib() // 1024})
    return results


def fuzz_costs(run: Run, examples: int) -> list[dict[str, Any]]:
    """Hypothesis combines the class-2 filters, tests and methods with large values."""
    measured: list[dict[str, Any]] = []

    @explore(examples)
    @given(CLASS2_TEMPLATES)
    def one(source: str) -> None:
        measured.extend(render_each_measured(run, [source]))

    one()
    return measured


def main() -> None:
    mode, argument = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(Path(tmp))
        if mode == "fuzz":
            fuzz(run, int(argument))
        elif mode == "isolation":
            isolation(run, int(argument))
        elif mode in ("fuzz-costs", "costs"):
            if mode == "fuzz-costs":
                measured = fuzz_costs(run, int(argument))
            else:
                measured = render_failures(run, json.loads(argument))
            run.engine.dispose()
            print(json.dumps({"cases": run.cases, "unexpected": run.unexpected, "each": measured}))
            return
        else:
            for source in json.loads(argument):
                run.cases += 1
                run.render(source, "budget")
        run.engine.dispose()
        run.report()


if __name__ == "__main__":
    main()
