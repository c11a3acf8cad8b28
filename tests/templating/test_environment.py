"""The sandbox: published escape payloads fail the recipient, limits stop runaway templates."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from promomail.templating.errors import RecipientFailed
from promomail.templating.template import render_limits
from promomail.templating.template.environment import make_environment
from promomail.templating.template.message import MessageTemplate
from tests.support.template_escapes import ESCAPES, MARKER, payload_client, refusal

MAX_RANGE = render_limits.LIMITS.range_items
MAX_SEQUENCE_PRODUCT = render_limits.LIMITS.sequence_product
MAX_PART_CHARS = render_limits.LIMITS.text

SECRET = "s3cr3t-Vv9Qx-not-for-templates"


def _render(source: str, **fields: str) -> dict[str, str]:
    return MessageTemplate("payload.j2", source).render({"client": payload_client(**fields)})


REFUSALS = (
    "not allowed in templates",
    "undefined value",
    "TypeError",
    "client can only be used as",
    "cannot use partial",
    "can only be called where it is written",
    "{% extends %} is not supported",
)


@pytest.mark.parametrize("payload", list(ESCAPES.values()), ids=list(ESCAPES))
def test_escape_payload_fails_the_recipient_and_does_nothing(
    payload: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMOMAIL_TEST_SECRET", SECRET)
    marker = tmp_path / "pwned"
    source = payload.replace(MARKER, str(marker))

    reason = refusal(source)

    assert reason.startswith("payload.j2"), reason
    assert any(why in reason for why in REFUSALS), reason
    assert SECRET not in reason
    assert "root:" not in reason
    assert " at 0x" not in reason
    assert not marker.exists()


def test_escape_reasons_name_what_was_refused() -> None:
    with pytest.raises(RecipientFailed, match=r"not allowed in templates: .*'__init__'"):
        _render("{{ self.__init__ }}")
    with pytest.raises(RecipientFailed, match=r"payload\.j2, line 2: undefined value: 'config'"):
        _render("ok\n{{ config.items() }}")


def test_sandbox_has_no_escape_footholds() -> None:
    env = make_environment()
    assert {"cycler", "joiner", "lipsum"}.isdisjoint(env.globals)
    assert env.sandboxed
    assert env.undefined.__name__ == "RecipientUndefined"


def test_ordinary_template_features_still_work() -> None:
    parts = _render(
        "{% set ns = namespace(total=0) %}"
        "{% for i in range(1, 5) %}{% set ns.total = ns.total + i %}{% endfor %}"
        "{{ ns.total }} {{ 'ab' * 3 }} {{ 2 ** 10 }} {{ [1, 2] * 2 }} "
        "{{ '{} {}'.format('x', client.first_name) }} {{ '%05d' % 42 }} "
        "{{ dict(a=1)['a'] }} {{ client.email|upper }} {{ 'x'|center(5) }}|",
        first_name="Ada",
    )
    assert parts == {"body": "10 ababab 1024 [1, 2, 1, 2] x Ada 00042 1 ADA@EXAMPLE.COM   x  |"}


# -- limits ---------------------------------------------------------------------

LIMITS = {
    "string-times-huge": ("{{ 'a' * 10**9 }}", "'*' would build"),
    "huge-times-list": ("{{ 10**9 * [1] }}", "'*' would build"),
    "power-tower": ("{{ 9 ** (9 ** 9) }}", "'**' result would exceed"),
    "power-huge": ("{{ 2 ** 100000 }}", "'**' result would exceed"),
    "range-huge": ("{{ range(10**9)|list|length }}", "range() of 1000000000 items"),
    "range-loop": ("{% for i in range(10**9) %}{% endfor %}", "range() of"),
    "output-too-long": (
        "{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}",
        f"longer than {MAX_PART_CHARS} characters",
    ),
    # Padding, format widths and growth: each would allocate 100 MB or more.
    "center-method": ("{{ 'a'.center(10**8) }}", "str.center() width"),
    "center-filter": ("{{ 'a'|center(10**8) }}", "|center width"),
    "indent-filter": ("{{ 'x'|indent(10**8) }}", "|indent width"),
    "percent-width": ("{{ '%0100000000d' % 1 }}", "'%' field width"),
    "format-filter-width": ("{{ '%100000000s'|format('a') }}", "|format field width"),
    "format-width": ("{{ '{:>100000000}'.format(1) }}", "format field width"),
    "format-map-width": ("{{ '{x:>100000000}'.format_map({'x': 1}) }}", "format field width"),
    "stored-format-width": (
        "{% set f = '{:>100000000}'.format %}{{ f(1) }}",
        "format field width",
    ),
    "concat-doubling": (
        "{% set ns = namespace(s='a') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "'~' result would be",
    ),
    "plus-doubling": (
        "{% set ns = namespace(s='a') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
        "'+' would be",
    ),
    "replace-growth": ("{{ ('a' * 1000)|replace('a', 'b' * 100000) }}", "str.replace() result"),
    "replace-method": ("{{ ('a' * 1000).replace('a', 'b' * 1000) }}", "str.replace() result"),
    "join-growth": ("{{ ('x' * 50000).join(['a'] * 50000) }}", "str.join() result"),
}


@pytest.mark.parametrize(("source", "reason"), list(LIMITS.values()), ids=list(LIMITS))
def test_limits_fail_the_recipient_without_large_allocations(source: str, reason: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(RecipientFailed, match="render limit") as failed:
            _render(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason in str(failed.value)
    # The refused value was never built: far below the 100 MB it would take.
    assert peak < 8 * 1024 * 1024


def test_limits_allow_values_up_to_the_caps() -> None:
    source = "{{ range(RANGE)|list|length }} {{ ('a' * TIMES)|length }} {{ (2 ** 2000) > 0 }}"
    parts = _render(
        source.replace("RANGE", str(MAX_RANGE)).replace("TIMES", str(MAX_SEQUENCE_PRODUCT))
    )
    assert parts == {"body": f"{MAX_RANGE} {MAX_SEQUENCE_PRODUCT} True"}
    with pytest.raises(RecipientFailed, match="range"):
        _render("{{ range(RANGE)|list|length }}".replace("RANGE", str(MAX_RANGE + 1)))


def test_power_is_left_associative_and_harmless() -> None:
    # Jinja2 evaluates 9**9**9 as (9**9)**9: a 78-digit number, not 9**387420489.
    assert _render("{{ 9**9**9 }}") == {"body": str((9**9) ** 9)}


def test_loops_that_output_nothing_hit_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # A work budget large enough that the clock, not the budget, ends the loops.
    monkeypatch.setattr(
        render_limits,
        "LIMITS",
        replace(render_limits.LIMITS, render_seconds=0.3, render_work=10**12),
    )
    template = MessageTemplate(
        "loops.j2",
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}done",
    )
    with pytest.raises(RecipientFailed, match=r"rendering took longer than 0\.3 s"):
        template.render({"client": payload_client()})
    # The timer is disarmed afterwards: the next recipient renders normally.
    assert MessageTemplate("ok.j2", "fine").render({"client": payload_client()}) == {"body": "fine"}


def test_output_cap_applies_to_each_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_limits, "LIMITS", replace(render_limits.LIMITS, text=1000))
    source = (
        "{% block subject %}short{% endblock %}"
        "{% block text %}{% for i in range(N) %}x{% endfor %}{% endblock %}"
    )
    assert _render(source.replace("N", "1000"))["text"] == "x" * 1000
    with pytest.raises(RecipientFailed, match="part 'text' is longer than 1000 characters"):
        _render(source.replace("N", "1001"))
