"""Invariant 10: nothing one recipient's render leaves behind reaches another's.

Every way a template can keep a value between two renders (a partial's
top-level list, dict or namespace reached through any form of import, a
macro's default, a list the code source hands out) is rendered for recipient
A and then B: B's message must be exactly what B gets rendered alone, and it
must hold nothing of A's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from promomail.pools.issuing.claiming import Reservation
from promomail.pools.store.dialect_sql import PromoCode
from promomail.templating.choices import OnExhausted
from promomail.templating.mailing.sources import ChunkCodes, ChunkData
from promomail.templating.template.client import Client
from promomail.templating.template.message import MessageTemplate
from tests.support.invariants import records_by_recipient
from tests.support.render_helpers import (
    customer_ids,
    initial_codes,
    pool_with_codes,
    read_jsonl,
    render,
    write_recipients,
)

REMEMBER = "{{ remember(client.email ~ ':' ~ client.promocode('welcome')) }}"

#: Partials (macros.j2, and inner.j2 where a partial imports a partial) and
#: the message that uses them; each keeps what it is given somewhere.
KEEPERS: dict[str, dict[str, str]] = {
    "list at the top of an imported partial": {
        "macros.j2": "{% set seen = [] %}"
        "{% macro remember(x) %}{{ seen.append(x) or '' }}{% endmacro %}",
        "message.j2": "{% import 'macros.j2' as m %}"
        "{{ m.remember(client.email ~ ':' ~ client.promocode('welcome')) }}{{ m.seen }}",
    },
    "from-import of the macro and the list": {
        "macros.j2": "{% set seen = [] %}"
        "{% macro remember(x) %}{{ seen.append(x) or '' }}{% endmacro %}",
        "message.j2": "{% from 'macros.j2' import remember, seen %}" + REMEMBER + "{{ seen }}",
    },
    "import inside blocks": {
        "macros.j2": "{% set seen = [] %}"
        "{% macro remember(x) %}{{ seen.append(x) or '' }}{% endmacro %}",
        "message.j2": "{% block subject %}{% import 'macros.j2' as m %}"
        "{{ m.remember(client.email ~ ':' ~ client.promocode('welcome')) }}{% endblock %}"
        "{% block text %}{% from 'macros.j2' import seen %}{{ seen }}{% endblock %}",
    },
    "dict grown with update and setdefault": {
        "macros.j2": "{% set by_mail = {} %}{% macro remember(x) %}"
        "{{ by_mail.update({x: 1}) or '' }}{{ by_mail.setdefault('n', []).append(x) or '' }}"
        "{% endmacro %}",
        "message.j2": "{% import 'macros.j2' as m %}"
        "{{ m.remember(client.email ~ ':' ~ client.promocode('welcome')) }}"
        "{{ m.by_mail|dictsort }}",
    },
    "namespace at the top of a partial": {
        "macros.j2": "{% set ns = namespace(seen=[], count=0) %}{% macro remember(x) %}"
        "{% set ns.seen = ns.seen + [x] %}{% set ns.count = ns.count + 1 %}{% endmacro %}",
        "message.j2": "{% import 'macros.j2' as m %}"
        "{{ m.remember(client.email ~ ':' ~ client.promocode('welcome')) }}"
        "{{ m.ns.seen }} {{ m.ns.count }}",
    },
    "mutable default of a macro": {
        "macros.j2": "{% macro remember(x, seen=[]) %}{{ seen.append(x) or '' }}{{ seen }}"
        "{% endmacro %}",
        "message.j2": "{% from 'macros.j2' import remember %}" + REMEMBER,
    },
    "a partial importing the partial that keeps the list": {
        "inner.j2": "{% set seen = [] %}",
        "macros.j2": "{% import 'inner.j2' as inner %}"
        "{% macro remember(x) %}{{ inner.seen.append(x) or '' }}{{ inner.seen }}{% endmacro %}",
        "message.j2": "{% from 'macros.j2' import remember %}" + REMEMBER,
    },
    "an included partial importing it": {
        "inner.j2": "{% set seen = [] %}",
        "macros.j2": "{% import 'inner.j2' as inner %}"
        "{{ inner.seen.append(client.email ~ ':' ~ client.promocode('welcome')) or '' }}"
        "{{ inner.seen }}",
        "message.j2": "{% include 'macros.j2' %}",
    },
    "import with context": {
        "macros.j2": "{% set seen = [] %}"
        "{% macro remember(x) %}{{ seen.append(x) or '' }}{% endmacro %}",
        "message.j2": "{% import 'macros.j2' as m with context %}"
        "{{ m.remember(client.email ~ ':' ~ client.promocode('welcome')) }}{{ m.seen }}",
    },
    "a list literal in the message itself": {
        "message.j2": "{% set seen = [] %}{% macro remember(x, more=[]) %}"
        "{{ seen.append(x) or '' }}{{ more.append(x) or '' }}{{ more }}{% endmacro %}"
        + REMEMBER
        + "{{ seen }}",
    },
    "a list the partial's top level prints into": {
        "macros.j2": "{% set seen = [] %}{{ seen.append(1) or '' }}{{ seen|length }}",
        "message.j2": "{% import 'macros.j2' as m %}{{ m.seen }}{{ client.promocode('welcome') }}",
    },
}


class NumberedCodes:
    """A code source that gives each customer a code named after them."""

    def promocode(self, customer_id: str, pool: str) -> str:
        return f"{pool.upper()}-{customer_id}"

    def last_promocode(self, customer_id: str, pool: str) -> str:
        return ""

    def promocodes(self, customer_id: str, pool: str) -> list[str]:
        return [self.promocode(customer_id, pool)]


def _template(folder: Path, files: dict[str, str]) -> MessageTemplate:
    for name, source in files.items():
        (folder / name).write_text(source, encoding="utf-8")
    return MessageTemplate.from_file(folder / "message.j2")


def _render(template: MessageTemplate, who: str) -> dict[str, str]:
    client = Client(who, {"id": who, "email": f"{who}@example.com"}, NumberedCodes())
    return template.render({"client": client})


@pytest.mark.parametrize("files", KEEPERS.values(), ids=KEEPERS.keys())
def test_a_render_leaves_nothing_for_the_next_recipient(
    files: dict[str, str], tmp_path: Path
) -> None:
    template = _template(tmp_path, files)
    alice = _render(template, "alice")
    bob_after_alice = _render(template, "bob")
    bob_alone = _render(_template(tmp_path, files), "bob")

    assert "alice" in "".join(alice.values())
    assert bob_after_alice == bob_alone
    assert "alice" not in "".join(bob_after_alice.values())
    # And the next one round: nothing piles up over a mailing either.
    assert _render(template, "alice") == alice


def test_one_message_shares_a_partial_between_its_parts(tmp_path: Path) -> None:
    """Within one message a partial runs once, as Jinja would run it."""
    template = _template(
        tmp_path,
        {
            "macros.j2": "{% set seen = [] %}"
            "{% macro remember(x) %}{{ seen.append(x) or '' }}{% endmacro %}",
            "message.j2": "{% block subject %}{% import 'macros.j2' as m %}"
            "{{ m.remember('from subject') }}{% endblock %}"
            "{% block text %}{% import 'macros.j2' as m %}{{ m.seen }}{% endblock %}",
        },
    )
    assert _render(template, "alice")["text"] == "['from subject']"
    assert _render(template, "bob")["text"] == "['from subject']"


def test_a_code_list_handed_to_a_template_is_its_own_copy() -> None:
    """What a template does to ``client.promocodes(...)`` never changes what is recorded."""
    codes = [PromoCode(None, i, f"REF-{i}") for i in range(4)]
    reservation = Reservation("ref", "m-1", "token", codes)
    data = ChunkData(per_customer={"ref": 2}, reservations={"ref": reservation})
    source = ChunkCodes({"ref": "ref"}, data, OnExhausted.STOP)
    template = MessageTemplate(
        "m.j2",
        "{% set mine = client.promocodes('ref') %}{{ mine.append('FORGED') or '' }}"
        "{{ mine.clear() or '' }}{{ client.promocodes('ref')|join(',') }}",
    )
    source.begin("alice")
    parts = template.render({"client": Client("alice", {"id": "alice"}, source)})
    assert parts == {"body": "REF-0,REF-1"}
    assert source.shown() == {"ref": ["REF-0", "REF-1"]}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_mailing_gives_no_recipient_anothers_address_or_code(
    db_url: str, engine: Engine, tmp_path: Path, workers: int
) -> None:
    """The issue's own case, end to end: a partial remembering each recipient's
    address and code, one mailing, every message shows its own alone."""
    pool_with_codes(engine, "welcome", 40)
    files = KEEPERS["list at the top of an imported partial"]
    for name, source in files.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    ids = customer_ids(30)
    out = tmp_path / "out.jsonl"

    summary = render(
        db_url,
        str(tmp_path / "message.j2"),
        write_recipients(tmp_path, ids),
        "m-isolated",
        out,
        workers=workers,
        chunk_size=7,
    )

    assert summary.ok and summary.totals.rendered == 30
    stored = initial_codes(engine, "m-isolated", "welcome")
    for recipient, record in records_by_recipient(read_jsonl(out)).items():
        assert record["parts"]["body"] == str([f"{recipient}@example.com:{stored[recipient]}"])


@pytest.mark.parametrize(
    ("partial", "lasts"),
    [
        ("{% macro hello(x) %}Hello {{ x }}{% endmacro %}\n<p>text</p>", True),
        ("{% set seen = [] %}{% macro hello(x) %}{{ x }}{% endmacro %}", False),
        ("{% from 'other.j2' import y %}{% macro hello(x) %}{{ x }}{% endmacro %}", False),
        ("{% macro hello(x) %}{{ x }}{% endmacro %}{{ 'printed' }}", False),
    ],
    ids=["macros and text", "a set", "an import", "an expression"],
)
def test_only_a_partial_of_macros_keeps_its_module_between_messages(
    partial: str, lasts: bool, tmp_path: Path
) -> None:
    """Jinja's cache is kept where nothing in the module can change."""
    template = _template(
        tmp_path,
        {
            "other.j2": "{% set y = [] %}",
            "macros.j2": partial,
            "message.j2": "{% import 'macros.j2' as m %}{{ m.hello(client.id) }}",
        },
    )
    env = template.plain_env
    modules = []
    for who in ("alice", "bob"):
        assert who in _render(template, who)["body"]
        env.begin_render()
        modules.append(env.get_template("macros.j2")._get_default_module())
    assert (modules[0] is modules[1]) is lasts
