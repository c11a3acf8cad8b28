"""A template reading a column the recipients file lacks is refused before anything moves.

Such a column fails every recipient, so ``render`` refuses the mailing
before a code is claimed, a lease taken or the mailing recorded, naming the
column, where the template reads it and the file's header; ``check
--recipients`` reports the same columns from the same analysis. A column
read with a fallback (``|default``, ``is defined``) is no reason to refuse.
Every store test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

from promomail.templating.mailing.checking import check_template
from promomail.templating.mailing.columns import MissingColumns
from tests.support.cli_helpers import Cli
from tests.support.render_helpers import (
    customer_ids,
    full_snapshot,
    pool_with_codes,
    read_jsonl,
    render,
    write_recipients,
    write_template,
)

TEMPLATE = """\
{% block subject %}Hello {{ client.first_name }}{% endblock %}
{% block text %}Your code: {{ client.promocode('spring') }}
Dear {{ client.nickname }}, see you soon.{% endblock %}
"""


def test_render_refuses_a_missing_column_before_anything_moves(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 50)
    template = write_template(tmp_path, TEMPLATE)
    recipients = write_recipients(tmp_path, customer_ids(40))
    out = tmp_path / "out.jsonl"
    before = full_snapshot(engine)

    with pytest.raises(MissingColumns) as caught:
        render(db_url, template, recipients, "m1", out)

    assert str(caught.value) == (
        f"{recipients} has no column 'nickname' ({template}, line 3), which the template "
        "reads for every recipient (its header, line 1: id,email,first_name); nothing was "
        "rendered: add the column to the file, or give the template a fallback, e.g. "
        "client.nickname|default('')"
    )
    # No code claimed, no lease taken, no mailing recorded, no output.
    assert full_snapshot(engine) == before
    assert not out.exists()
    # check reports the same column, at the same line, from the same analysis.
    report = check_template(engine, template, recipients)
    assert [(p.line, p.message) for p in report.problems] == [
        (
            3,
            f"client.nickname is not a column of {recipients} "
            "(its header, line 1: id,email,first_name)",
        )
    ]


def test_the_refusal_names_a_partial_and_a_column_that_differs_in_case(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 10)
    write_template(
        tmp_path, "Regards,\n\n{{ client.Team }} for {{ client.First_Name }}\n", name="footer.j2"
    )
    template = write_template(
        tmp_path,
        "{{ client.promocode('spring') }}\n{% include 'footer.j2' %}\n{{ client.City }}\n",
    )
    recipients = write_recipients(tmp_path, customer_ids(3), team="Northwind")
    with pytest.raises(MissingColumns) as caught:
        render(db_url, template, recipients, "m1", tmp_path / "out.jsonl")
    message = str(caught.value)
    assert message.startswith(
        f"{recipients} has no columns 'Team' ({template}, line 2 (in footer.j2, line 3); "
        f"the file has 'team'), 'First_Name' ({template}, line 2 (in footer.j2, line 3); the "
        f"file has 'first_name'), 'City' ({template}, line 3), which the template reads"
    )
    assert "(its header, line 1: id,email,first_name,team)" in message


def test_a_column_read_with_a_fallback_renders_and_check_still_says_so(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 10)
    template = write_template(
        tmp_path,
        "{{ client.promocode('spring') }} {{ client.nickname|default('friend') }}\n"
        "{% if client.vip is defined %}VIP {{ client.vip }}{% endif %}\n",
    )
    recipients = write_recipients(tmp_path, customer_ids(3))
    out = tmp_path / "out.jsonl"
    summary = render(db_url, template, recipients, "m1", out)
    assert (summary.totals.rendered, summary.totals.failures) == (3, [])
    assert all(
        m["parts"]["body"].startswith(m["codes"]["spring"] + " friend") for m in read_jsonl(out)
    )
    report = check_template(engine, template, recipients)
    assert [p.line for p in report.problems] == [1, 2]
    assert all("the template's fallback is used" in p.message for p in report.problems)


def test_jsonl_recipients_are_refused_only_for_a_key_no_record_has(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 10)
    template = write_template(tmp_path, TEMPLATE)
    people = [
        {"id": "a", "email": "a@x.org", "first_name": "Ann"},
        {"id": "b", "email": "b@x.org", "first_name": "Bo", "nickname": "Bobo"},
    ]
    some = tmp_path / "some.jsonl"
    some.write_text("".join(json.dumps(p) + "\n" for p in people), encoding="utf-8")
    summary = render(db_url, template, str(some), "m1", tmp_path / "some-out.jsonl")
    # Read with no fallback, the column fails the recipient without it, alone.
    assert (summary.totals.rendered, [f.recipient for f in summary.totals.failures]) == (1, ["a"])

    none = tmp_path / "none.jsonl"
    none.write_text("".join(json.dumps(p) + "\n" for p in people[:1]) * 3, encoding="utf-8")
    before = full_snapshot(engine)
    with pytest.raises(MissingColumns, match=r"none.jsonl has no column 'nickname'") as caught:
        render(db_url, template, str(none), "m2", tmp_path / "none-out.jsonl")
    assert "(the keys of its first record: 'id', 'email', 'first_name')" in str(caught.value)
    assert full_snapshot(engine) == before


def test_the_command_refuses_with_one_line_and_records_nothing(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    run = Cli(db_url)
    pool_with_codes(engine, "spring", 3_000)
    template = write_template(tmp_path, TEMPLATE)
    recipients = write_recipients(tmp_path, customer_ids(2_000))
    out = tmp_path / "out.jsonl"

    result = run("render", template, "--recipients", recipients, "--mailing", "m1", "--out", out)

    assert result.exit_code == 1
    # One line, not one per recipient.
    assert result.stderr.splitlines() == [
        f"Error: {recipients} has no column 'nickname' ({template}, line 3), which the "
        "template reads for every recipient (its header, line 1: id,email,first_name); "
        "nothing was rendered: add the column to the file, or give the template a "
        "fallback, e.g. client.nickname|default('')"
    ]
    assert run.json("mailings") == []
    assert run.json("pool", "show", "spring")["available"] == 3_000
