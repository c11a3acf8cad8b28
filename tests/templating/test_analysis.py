"""Static analysis: the pools a template uses and the client columns it reads."""

from __future__ import annotations

from pathlib import Path

from promomail.templating.template.analysis import NonLiteralPool, TemplateUsage
from promomail.templating.template.environment import make_environment
from promomail.templating.template.message import MessageTemplate, analyze_parsed, parse_template
from tests.support.paths import REPO_ROOT

SAMPLES = REPO_ROOT / "sample_templates"


def _usage(source: str) -> TemplateUsage:
    env = make_environment()
    return analyze_parsed(env, parse_template(env, "t.j2", source))


def test_issuing_and_reissuing_pools_with_their_first_lines() -> None:
    usage = _usage(
        "{% block subject %}{{ client.promocode('spring') }}{% endblock %}\n"
        '{% block text %}{{ client.promocode("spring") }}\n'
        "{{ client.last_promocode('welcome') }}\n"
        "{{ client.promocodes('referral')|join(', ') }}{% endblock %}\n"
        "{% block html %}{{ client.last_promocode('welcome') }}{% endblock %}"
    )
    assert usage.parts == ("subject", "text", "html")
    assert usage.issues_from == {"spring": 1, "referral": 4}
    assert usage.reissues_from == {"welcome": 3}
    assert usage.pool_refs == ["spring", "referral", "welcome"]
    assert usage.non_literal == []


def test_calls_in_branches_and_loops_are_found() -> None:
    usage = _usage(
        "{% if client.vip == 'yes' %}{{ client.promocode('vip') }}"
        "{% else %}{{ client.promocode('standard') }}{% endif %}\n"
        "{% for i in range(2) %}{{ client.promocode('loop') }}{% endfor %}\n"
        "{% macro code() %}{{ client.promocode('macro') }}{% endmacro %}{{ code() }}\n"
        "{% set c = client.promocode('assigned') %}{{ c|default(client.last_promocode('old')) }}"
    )
    assert list(usage.issues_from) == ["vip", "standard", "loop", "macro", "assigned"]
    assert usage.reissues_from == {"old": 4}


def test_non_literal_pool_arguments_are_reported_with_lines() -> None:
    usage = _usage(
        "{{ client.promocode(pool) }}\n"
        "{{ client.promocode('a' ~ 'b') }}\n"
        "{{ client.last_promocode(1) }}\n"
        "{{ client.promocode() }}\n"
        "{{ client.promocode(pool='x') }}\n"
        "{{ client.promocode('x', 'y') }}\n"
        "{{ client.promocodes(client.pool) }}"
    )
    assert usage.non_literal == [
        NonLiteralPool("promocode", 1),
        NonLiteralPool("promocode", 2),
        NonLiteralPool("last_promocode", 3),
        NonLiteralPool("promocode", 4),
        NonLiteralPool("promocode", 5),
        NonLiteralPool("promocode", 6),
        NonLiteralPool("promocodes", 7),
    ]
    assert usage.issues_from == {} and usage.reissues_from == {}
    assert usage.pool_refs == []


def test_other_calls_are_not_pool_uses() -> None:
    usage = _usage(
        "{{ other.promocode('x') }}{{ client.email.upper() }}{{ promocode('y') }}"
        "{{ client.first_name|default('friend') }}"
    )
    assert usage.issues_from == {} and usage.non_literal == []


def test_columns_read_from_the_client() -> None:
    usage = _usage(
        "{{ client.id }} {{ client.first_name }}\n"
        "{{ client['last name'] }} {{ client.email|lower }}\n"
        "{% if client.vip is defined %}{{ client.first_name }}{% endif %}\n"
        "{{ client.promocode('spring') }} {{ other.column }}"
    )
    assert usage.columns == {"first_name": 1, "last name": 2, "email": 2, "vip": 3}


def test_body_template_has_one_part() -> None:
    assert _usage("Code {{ client.promocode('flash') }}").parts == ("body",)


def test_sample_templates() -> None:
    env = make_environment()

    def of(name: str) -> TemplateUsage:
        path = SAMPLES / name
        return analyze_parsed(env, parse_template(env, name, path.read_text(encoding="utf-8")))

    welcome = of("welcome.j2")
    assert list(welcome.issues_from) == ["welcome"] and welcome.reissues_from == {}
    assert set(welcome.columns) == {"first_name"}
    reminder = of("reminder.j2")
    assert reminder.issues_from == {} and list(reminder.reissues_from) == ["welcome"]
    sms = of("sms.j2")
    assert list(sms.issues_from) == ["flash"] and set(sms.columns) == {"first_name", "vip"}


def test_columns_read_with_a_fallback_and_in_partials_are_told_apart(tmp_path: Path) -> None:
    (tmp_path / "footer.j2").write_text("\n{{ client.team }}\n", encoding="utf-8")
    source = (
        "{{ client.nickname|default('friend') }} {{ client['vip'] is defined }}\n"
        "{{ client.first_name }} {{ client.nickname }}\n"
        "{% include 'footer.j2' %}\n"
        "{{ client.city|d('') }} {{ client.email|lower }}"
    )
    (tmp_path / "message.j2").write_text(source, encoding="utf-8")
    usage = MessageTemplate.from_file(tmp_path / "message.j2").usage
    assert usage.columns == {
        "nickname": 1, "vip": 1, "first_name": 2, "team": 3, "city": 4, "email": 4,
    }  # fmt: skip
    assert usage.optional_columns == {"nickname", "vip", "city"}
    assert usage.required_columns == {"first_name": 2, "team": 3, "email": 4}
    assert usage.column_partials == {"team": ("footer.j2", 2)}
