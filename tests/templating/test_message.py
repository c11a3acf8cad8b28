"""Message templates: parts, escaping only in html, undefined values fail the recipient."""

from __future__ import annotations

from pathlib import Path

import pytest

from promomail.templating.errors import InvalidTemplate, RecipientFailed
from promomail.templating.template.client import Client
from promomail.templating.template.files import read_template
from promomail.templating.template.message import BODY_PART, MessageTemplate
from tests.support.paths import REPO_ROOT


class CountingCodes:
    """A code source that hands out numbered codes and counts the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def promocode(self, customer_id: str, pool: str) -> str:
        self.calls.append(("promocode", customer_id, pool))
        return f"{pool.upper()}-{len(self.calls)}"

    def last_promocode(self, customer_id: str, pool: str) -> str:
        self.calls.append(("last_promocode", customer_id, pool))
        return ""

    def promocodes(self, customer_id: str, pool: str) -> list[str]:
        self.calls.append(("promocodes", customer_id, pool))
        return ["A", "B"]


def _client(source: CountingCodes | None = None, /, **fields: object) -> Client:
    return Client("cust-1", {"id": "cust-1", **fields}, source or CountingCodes())


def test_blocks_are_the_parts_in_a_fixed_order() -> None:
    template = MessageTemplate(
        "m.j2",
        "{% block html %}<p>{{ client.id }}</p>{% endblock %}\n"
        "{% block subject %}  Hello {{ client.id }}  \n{% endblock %}\n"
        "{% block text %}Hi {{ client.id }}\n{% endblock %}\n"
        "{% block footer %}not a part{% endblock %}",
    )
    assert template.parts == ("subject", "text", "html")
    assert template.render({"client": _client()}) == {
        "subject": "Hello cust-1",  # surrounding whitespace trimmed in the subject only
        "text": "Hi cust-1\n",
        "html": "<p>cust-1</p>",
    }


def test_some_blocks_give_only_those_parts() -> None:
    template = MessageTemplate(
        "m.j2", "{% block subject %}S{% endblock %}{% block text %}T{% endblock %}"
    )
    assert template.parts == ("subject", "text")
    assert template.render({"client": _client()}) == {"subject": "S", "text": "T"}


def test_without_blocks_the_whole_file_is_the_body() -> None:
    template = MessageTemplate(
        "sms.j2", "Code {{ client.promocode('flash') }} for {{ client.name }}"
    )
    assert template.parts == (BODY_PART,)
    assert template.render({"client": _client(name="Ada")}) == {"body": "Code FLASH-1 for Ada"}


def test_sample_templates_parts() -> None:
    samples = REPO_ROOT / "sample_templates"
    assert MessageTemplate.from_file(samples / "welcome.j2").parts == ("subject", "text", "html")
    assert MessageTemplate.from_file(samples / "reminder.j2").parts == ("subject", "text", "html")
    assert MessageTemplate.from_file(samples / "sms.j2").parts == ("body",)


def test_only_renders_one_part() -> None:
    source = CountingCodes()
    template = MessageTemplate(
        "m.j2",
        "{% block subject %}S {{ client.promocode('a') }}{% endblock %}"
        "{% block text %}T {{ client.promocode('b') }}{% endblock %}",
    )
    assert template.render({"client": _client(source)}, only="text") == {"text": "T B-1"}
    assert source.calls == [("promocode", "cust-1", "b")]


def test_autoescape_only_in_html() -> None:
    template = MessageTemplate(
        "m.j2",
        "{% block subject %}{{ client.name }}{% endblock %}"
        "{% block text %}{{ client.name }}{% endblock %}"
        "{% block html %}<p>{{ client.name }}</p>{{ '<i>' }}{{ '<b>'|safe }}{% endblock %}",
    )
    name = 'Tom & <Jerry> "O\'Neil"'
    parts = template.render({"client": _client(name=name)})
    assert parts["subject"] == name
    assert parts["text"] == name
    assert parts["html"] == ("<p>Tom &amp; &lt;Jerry&gt; &#34;O&#39;Neil&#34;</p>&lt;i&gt;<b>")


def test_body_is_not_escaped() -> None:
    template = MessageTemplate("sms.j2", "{{ client.name }}")
    assert template.render({"client": _client(name="<&>")}) == {"body": "<&>"}


def test_undefined_column_fails_the_recipient_naming_it_and_the_line() -> None:
    template = MessageTemplate(
        "m.j2",
        "{% block subject %}Hi{% endblock %}\n{% block text %}\n{{ client.first_name }}{% endblock %}",
    )
    with pytest.raises(RecipientFailed) as failed:
        template.render({"client": _client(email="a@b")})
    assert str(failed.value) == (
        "m.j2, line 3: undefined value: the recipient has no 'first_name' column"
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ nobody }}",
        "{{ nobody|upper }}",
        "{% if nobody %}x{% endif %}",
        "{% for x in nobody %}{% endfor %}",
        "{{ client.missing ~ 'x' }}",
        "{{ client['missing'] }}",
        "{{ client.missing.deeper }}",
    ],
)
def test_strict_undefined_everywhere(source: str) -> None:
    with pytest.raises(RecipientFailed, match="undefined value"):
        MessageTemplate("m.j2", source).render({"client": _client()})


def test_default_filter_and_defined_test_handle_optional_columns() -> None:
    template = MessageTemplate(
        "m.j2",
        "Hi {{ client.first_name|default('friend') }}"
        "{% if client.vip is defined %} VIP{% endif %}{{ extra|default('') }}",
    )
    assert template.render({"client": _client()}) == {"body": "Hi friend"}
    assert template.render({"client": _client(first_name="Ada", vip="yes")}) == {
        "body": "Hi Ada VIP"
    }


def test_variables_besides_the_client() -> None:
    template = MessageTemplate("m.j2", "{{ campaign }}: {{ client['first name'] }}")
    parts = template.render({"campaign": "Spring", "client": _client(**{"first name": "Ada"})})
    assert parts == {"body": "Spring: Ada"}


def test_every_call_goes_to_the_code_source() -> None:
    source = CountingCodes()
    template = MessageTemplate(
        "m.j2",
        "{% block subject %}{{ client.promocode('spring') }}{% endblock %}"
        "{% block text %}{{ client.promocode(\"spring\") }} {{ client.last_promocode('old') }}"
        "{{ client.promocodes('ref')|join(',') }}{% endblock %}",
    )
    template.render({"client": _client(source)})
    assert source.calls == [
        ("promocode", "cust-1", "spring"),
        ("promocode", "cust-1", "spring"),
        ("last_promocode", "cust-1", "old"),
        ("promocodes", "cust-1", "ref"),
    ]


def test_a_branch_not_taken_calls_nothing() -> None:
    source = CountingCodes()
    template = MessageTemplate(
        "m.j2", "{% if client.vip == 'yes' %}{{ client.promocode('vip') }}{% endif %}ok"
    )
    assert template.render({"client": _client(source, vip="no")}) == {"body": "ok"}
    assert source.calls == []


def test_pool_must_be_a_string() -> None:
    with pytest.raises(RecipientFailed, match="pool must be given as a string"):
        MessageTemplate("m.j2", "{{ client.promocode(1) }}").render({"client": _client()})


def test_syntax_error_names_template_and_line() -> None:
    with pytest.raises(InvalidTemplate) as error:
        MessageTemplate("broken.j2", "line one\n{% if x %}\nno end")
    assert error.value.template == "broken.j2"
    assert error.value.line == 3
    assert str(error.value).startswith("broken.j2, line 3: syntax error")


def test_read_template_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidTemplate, match="no such file"):
        read_template(tmp_path / "absent.j2")
    latin = tmp_path / "latin.j2"
    latin.write_bytes(b"caf\xe9")
    with pytest.raises(InvalidTemplate, match=r"latin\.j2: not UTF-8 text \(byte 4\)"):
        read_template(latin)
    good = tmp_path / "good.j2"
    good.write_text("hi", encoding="utf-8")
    assert read_template(good) == (str(good), "hi")
