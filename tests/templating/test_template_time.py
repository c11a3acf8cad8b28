"""Time the timer does not see, and timed-out renders that must not crash (invariant 11).

- Nothing a template holds runs at compile time: ``check`` renders nothing,
  so a filter folded by Jinja's optimizer would run outside any timer.
- No single step runs long: a step in C cannot be interrupted by the
  render's timer, so the steps whose time grows faster than their inputs
  are refused up front.
- A render stopped by the timer fails that recipient with a reason, wherever
  the signal lands (even on an instruction without a line number).
"""

from __future__ import annotations

import json
import subprocess
import types
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

import promomail.templating.template.message as message_module
from promomail.templating.errors import InvalidTemplate, RecipientFailed
from promomail.templating.mailing.sources import PreviewCodes
from promomail.templating.template import render_limits
from promomail.templating.template.client import Client
from promomail.templating.template.environment import MessageEnvironment, make_environment
from promomail.templating.template.message import (
    MessageTemplate,
    _template_line,
    compile_template,
)
from tests.support.cli_helpers import Cli, promomail_command
from tests.support.render_helpers import (
    pool_with_codes,
    render,
    write_jsonl_recipients,
    write_template,
)

#: The bounds as the code has them, before any test changes one.
RENDER_SECONDS = render_limits.LIMITS.render_seconds
COMPILE_SECONDS = render_limits.LIMITS.compile_seconds

#: A filtered loop: Python compiles its body into a generator whose jump
#: back has no line number, and that jump is where the timer's signal lands.
#: Within the work budget (comparing two long texts costs no unit), so only
#: the clock stops it.
LINELESS_SLOW = (
    "{% set s = 'x' * 100000 %}{% set a = s ~ s ~ s ~ s ~ 'a' %}{% set b = s ~ s ~ s ~ s ~ 'b' %}"
    "{% for i in range(10000) %}{% for j in range(10000) if a > b %}{% endfor %}{% endfor %}"
)
#: Literal payloads that took ``check`` minutes while Jinja folded them.
FOLDED_PAYLOADS = {
    "round-ceil": "{{ 1.5|round(100000000, 'ceil') }}",
    "round-int": "{{ 5|round(-100000000) }}",
    "urlize": "{{ '" + ")" * 300_000 + "a.'|urlize }}",
    "autoescape": "{% autoescape 1.5|round(100000000, 'ceil') > 1 %}x{% endautoescape %}",
    "test": "{{ 1.5|round(100000000, 'floor') is odd }}",
}


def _client(**fields: str) -> Client:
    return Client("cust-1", {"id": "cust-1", **fields}, PreviewCodes(None, {}))


def _render(source: str) -> dict[str, str]:
    return MessageTemplate("t.j2", source).render({"client": _client()})


# -- compile time -----------------------------------------------------------------


@pytest.fixture
def filter_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every filter and test the compile calls, by name (none may be)."""
    calls: list[str] = []

    def spying(template: Any = None) -> MessageEnvironment:
        env = make_environment(template)
        for table, kind in ((env.filters, "filter"), (env.tests, "test")):
            for name, function in list(table.items()):
                table[name] = _spy(function, f"{kind} {name}", calls)
        return env

    monkeypatch.setattr(message_module, "make_environment", spying)
    yield calls


def _spy(function: Callable[..., Any], label: str, calls: list[str]) -> Callable[..., Any]:
    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(label)
        return function(*args, **kwargs)

    for attribute in ("jinja_pass_arg",):
        if hasattr(function, attribute):
            setattr(spy, attribute, getattr(function, attribute))
    return spy


_LITERALS = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text("ab.()<>@ /:", max_size=8),
    st.booleans(),
    st.lists(st.integers(0, 9), max_size=3),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(sorted(make_environment().filters)),
    value=_LITERALS,
    args=st.lists(_LITERALS, max_size=2),
    test=st.sampled_from(sorted(make_environment().tests)),
    where=st.sampled_from(
        [
            "{{ EXPR }}",
            "{{ (EXPR) ~ 'x' }}",
            "{% if EXPR %}y{% endif %}",
            "{{ [EXPR] }}",
            "{{ -(EXPR) }}",
            "{% autoescape EXPR %}z{% endautoescape %}",
        ]
    ),
    tested=st.booleans(),
    html=st.booleans(),
)
def test_no_filter_or_test_runs_at_compile_time(
    filter_calls: list[str],
    name: str,
    value: Any,
    args: list[Any],
    test: str,
    where: str,
    tested: bool,
    html: bool,
) -> None:
    call = f"{value!r}|{name}({', '.join(map(repr, args))})"
    expression = f"({call}) is {test}" if tested else call
    source = where.replace("EXPR", expression)
    if html:  # compiled a second time, autoescaped
        source = "{% block html %}" + source + "{% endblock %}"
    filter_calls.clear()
    try:
        compile_template("t.j2", source)
    except InvalidTemplate:
        return  # a call the analysis refuses is fine: it did not run either
    assert filter_calls == []


@pytest.mark.parametrize("payload", FOLDED_PAYLOADS.values(), ids=FOLDED_PAYLOADS.keys())
def test_check_of_literal_payloads_returns_within_the_bound(payload: str, tmp_path: Path) -> None:
    template = write_template(tmp_path, payload)
    (tmp_path / "store.db").touch()  # check only reads: the store must exist
    url = f"sqlite:///{tmp_path / 'store.db'}"
    try:
        done = subprocess.run(
            promomail_command(url, "check", template, "--json"),
            capture_output=True,
            timeout=COMPILE_SECONDS + 25,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"check of {payload[:40]!r} did not return within {COMPILE_SECONDS + 25} s")
    assert b"Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["ok"], report


def test_a_compile_that_outruns_its_deadline_is_an_invalid_template(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(render_limits, "LIMITS", replace(render_limits.LIMITS, compile_seconds=0.2))
    real = message_module._compile_template

    def slow(name: str, source: str) -> Any:
        while True:  # whatever Jinja or Python might spend on an odd template
            pass
        return real(name, source)  # pragma: no cover

    monkeypatch.setattr(message_module, "_compile_template", slow)
    with pytest.raises(InvalidTemplate, match=r"took longer than 0\.2 s to compile"):
        compile_template("t.j2", "x")


# -- single steps ------------------------------------------------------------------

_BIG = 2**100_000 - 1  # beyond MAX_OPERAND_BITS, far below what may be built


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ big // 3 }}", "'//' of an integer of 100000 bits"),
        ("{{ 3 // big }}", "'//' of an integer"),
        ("{{ big % 7 }}", "'%' of an integer"),
        ("{{ range(0, big, big // 1)|length }}", "'//'"),
        ("{{ range(big, big + 1)|length }}", "range() of an integer"),
        ("{{ big|round(-2) }}", "|round of an integer"),
        ("{{ 1.5|round(10000000, 'ceil') }}", "|round precision of 10000000"),
        ("{{ 5|round(-10000000) }}", "|round precision of -10000000"),
        ("{{ 1 ** big }}", "'**' exponent of 100000 bits"),
        ("{{ 0 ** (10 ** 30) }}", "'**' exponent of 100 bits"),
        ("{{ ('f' * 30000)|int(base=16) // 7 }}", "'//' of an integer of 120000 bits"),
        ("{{ (')' * 3000 ~ 'a.')|urlize }}", "|urlize of a word of 3002 characters"),
        ("{{ ('>' * 1000 ~ 'a.')|urlize }}", "|urlize of a word of 4002 characters"),
    ],
)
def test_steps_that_would_run_long_are_refused_up_front(source: str, reason: str) -> None:
    template = MessageTemplate("t.j2", source)
    with pytest.raises(RecipientFailed, match="render limit") as caught:
        template.render({"client": _client(), "big": _BIG})
    assert reason in str(caught.value)


@settings(max_examples=200, deadline=None)
@given(
    left=st.integers(-(2**70), 2**70)
    | st.integers(0, render_limits.LIMITS.operand_bits - 1).map(lambda b: 2**b),
    right=st.integers(1, 2**70)
    | st.integers(0, render_limits.LIMITS.operand_bits).map(lambda b: 2**b - 1),
    operator=st.sampled_from(["//", "%"]),
)
def test_integer_division_within_the_bound_is_python_s(
    left: int, right: int, operator: str
) -> None:
    env = make_environment()
    template = env.from_string("{{ (a OP b) == expected }}".replace("OP", operator))
    right = right or 1
    expected = left // right if operator == "//" else left % right
    assert template.render(a=left, b=right, expected=expected) == "True"


@settings(max_examples=100, deadline=None)
@given(
    bits=st.integers(render_limits.LIMITS.operand_bits + 1, 4 * render_limits.LIMITS.operand_bits),
    small=st.integers(1, 2**64),
    source=st.sampled_from(
        [
            "{{ a // b }}",
            "{{ b // a }}",
            "{{ a % b }}",
            "{{ b % a }}",
            "{{ range(a, a + b) }}",
            "{{ a|round(-1) }}",
            "{{ b ** a }}",
        ]
    ),
)
def test_any_integer_beyond_the_bound_is_refused_before_the_step(
    bits: int, small: int, source: str
) -> None:
    template = MessageTemplate("t.j2", source)
    with pytest.raises(RecipientFailed, match="render limit"):
        template.render({"client": _client(), "a": 2**bits - 1, "b": small})


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(
        st.text(
            st.sampled_from("a.()<>&@:/w,"),
            min_size=1,
            max_size=render_limits.LIMITS.urlize_word // 4,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_urlize_of_words_within_the_bound_still_links(words: list[str]) -> None:
    text = " ".join(words)
    parts = MessageTemplate("t.j2", "{{ text|urlize }}").render({"client": _client(), "text": text})
    assert parts["body"] == jinja2.Environment().from_string("{{ text|urlize }}").render(text=text)


#: A list that holds a 100-character text 100,000 times: 100,000 units to
#: build, 10 million characters for any comparison to read.
_ALIASED = "{% set s = 'x' * 100 %}{% set a = [s] * 100000 %}"


@pytest.mark.parametrize(
    "comparison",
    [
        "{{ a == a[:] }}",
        "{{ a < a[:] }}",
        "{{ s in a }}",
        "{{ 'y' not in a }}",
        "{{ a is eq(a[:]) }}",
        "{{ a is in [a] }}",
        "{{ {'k': a} == {'k': a[:]} }}",
        "{{ a|sort|length }}",
        "{{ a|unique|list|length }}",
        "{{ a|max }}",
        "{{ a|map('string')|min }}",
        "{{ {'k': a}|dictsort|length }}",
        "{{ a|groupby(0)|list|length }}",
        "{{ a.count(s) }}",
        "{{ a.index('y') }}",
        "{{ a|select('in', [a])|list|length }}",
    ],
)
def test_comparing_what_a_list_holds_is_paid_for_before_it_runs(comparison: str) -> None:
    # One step in C, uninterruptible, that reads every text the list holds.
    with pytest.raises(RecipientFailed, match="needs more than"):
        _render(_ALIASED + comparison)


@settings(max_examples=150, deadline=None)
@given(
    left=st.lists(st.text("abc", max_size=3), max_size=6),
    right=st.lists(st.text("abc", max_size=3), max_size=6),
    item=st.text("abc", max_size=3),
)
def test_comparisons_within_the_budget_are_python_s(
    left: list[str], right: list[str], item: str
) -> None:
    source = (
        "{{ [a == b, a < b, a >= b, x in a, x not in b, a is eq(b), x is in a,"
        " a|sort, a|unique|list, {'k': a} == {'k': b}] }}"
        "{% if a %}{{ [a|max, a|min, a.count(x)] }}{% endif %}"
    )
    template = MessageTemplate("t.j2", source)
    body = template.render({"client": _client(), "a": left, "b": right, "x": item})["body"]
    expected = [
        left == right,
        left < right,
        left >= right,
        item in left,
        item not in right,
        left == right,
        item in left,
        sorted(left),
        list(dict.fromkeys(left)),
        {"k": left} == {"k": right},
    ]
    tail = str([max(left), min(left), left.count(item)]) if left else ""
    assert body == str(expected) + tail


# -- a timed-out render never crashes ---------------------------------------------


@pytest.fixture
def quick_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    # The clock, not the work budget, ends the loops.
    monkeypatch.setattr(
        render_limits,
        "LIMITS",
        replace(render_limits.LIMITS, render_seconds=0.2, render_work=10**12),
    )


def test_a_line_less_instruction_does_not_break_the_failure_report() -> None:
    template = MessageTemplate("t.j2", "{% for i in range(3) %}{{ i }}{% endfor %}")
    # A frame of code that counts as the template's, stopped where no line is.
    code = compile(
        "def body():\n    for x in range(3):\n        try:\n            yield x\n"
        "        finally:\n            pass\n",
        "<template>",
        "exec",
    )
    namespace: dict[str, Any] = {"__jinja_template__": template._plain}
    exec(code, namespace)
    generator = namespace["body"]()
    next(generator)
    frame = generator.gi_frame
    line_less = [start for start, _end, line in frame.f_code.co_lines() if line is None]
    error = RuntimeError("stopped")
    error.__traceback__ = types.TracebackType(None, frame, line_less[0], -1)
    assert error.__traceback__.tb_lineno is None
    assert _template_line(error, "t.j2") is None
    # Below a frame that has a line, that line is the answer.
    lined = types.TracebackType(error.__traceback__, frame, 0, 4)
    error.__traceback__ = lined
    assert _template_line(error, "t.j2") == template._plain.get_corresponding_lineno(4)


def test_a_timed_out_render_landing_on_a_line_less_frame_fails_that_recipient(
    quick_timer: None,
) -> None:
    template = MessageTemplate("slow.j2", LINELESS_SLOW + "done")
    for _ in range(5):  # the signal lands on that jump nearly every time
        with pytest.raises(RecipientFailed, match=r"rendering took longer than 0\.2 s"):
            template.render({"client": _client()})
    assert _render("fine") == {"body": "fine"}


def test_preview_of_a_line_less_timeout_is_an_error_line(
    quick_timer: None, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    template = write_template(
        tmp_path, "{% if client.id == 'slow' %}" + LINELESS_SLOW + "{% endif %}ok"
    )
    cli = Cli(db_url)
    result = cli("preview", template, "--recipient", "id=slow", "--json")
    assert "Traceback" not in result.output
    [shown] = json.loads(result.stdout)
    assert shown["parts"] is None
    assert "rendering took longer than 0.2 s" in shown["error"]


def _mailing(tmp_path: Path, engine: Engine) -> tuple[str, str]:
    pool_with_codes(engine, "spring", 10)
    template = write_template(
        tmp_path,
        "{{ client.promocode('spring') }}{% if client.id == 'slow' %}"
        + LINELESS_SLOW
        + "{% endif %}",
    )
    records = [{"id": i, "email": f"{i}@example.com"} for i in ("a", "slow", "b", "c")]
    return template, write_jsonl_recipients(tmp_path, records)


def test_one_slow_recipient_fails_alone_in_one_process(
    quick_timer: None, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    template, recipients = _mailing(tmp_path, engine)
    summary = render(db_url, template, recipients, "m1", tmp_path / "out.jsonl")
    [(recipient, _line, reason, _kind)] = summary.totals.failures
    assert recipient == "slow" and "rendering took longer than 0.2 s" in reason
    assert summary.totals.rendered == 3


def test_one_slow_recipient_fails_alone_with_two_workers(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    # Real worker processes, with the real time limit: they start fresh.
    template, recipients = _mailing(tmp_path, engine)
    done = subprocess.run(
        promomail_command(
            db_url,
            "render",
            template,
            "--recipients",
            recipients,
            "--mailing",
            "m2",
            "--out",
            tmp_path / "out.jsonl",
            "--workers",
            "2",
            "--json",
        ),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.returncode == 1, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["rendered"] == 3, summary
    [failure] = summary["failures"]
    assert failure["recipient"] == "slow"
    assert f"rendering took longer than {RENDER_SECONDS:g} s" in failure["reason"]
