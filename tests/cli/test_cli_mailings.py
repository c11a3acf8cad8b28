"""The command line for templates and mailings, end to end.

``check``, ``preview``, ``render``, ``mailings`` and ``mailing show`` on
SQLite and on PostgreSQL (the ``db_url`` fixture), mostly through click's
CliRunner. What needs real processes runs the command as a subprocess:
``--workers`` (spawned worker processes), a SIGTERM or Ctrl-C in the middle
of a render, and the demo script of ``sample_templates``.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import Engine, inspect, text

from tests.support.cli_helpers import Cli, promomail_command, promomail_script
from tests.support.invariants import count_issuances
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
CLI_PY = ROOT / "cli.py"
SAMPLES = ROOT / "sample_templates"
WELCOME = SAMPLES / "welcome.j2"
REMINDER = SAMPLES / "reminder.j2"
SAMPLE_RECIPIENTS = SAMPLES / "recipients.csv"
SAMPLE_IDS = [f"cust-{i:03d}" for i in range(1, 9)]
PLACEHOLDER = "[[promocode from welcome]]"

#: ``Mailing m (all): 8 recipients, 8 rendered, … failed in 0.12 s — 66 recipients/s``
SUMMARY = re.compile(
    r"^Mailing (?P<mailing>\S+) \((?P<shard>[^)]+)\): (?P<recipients>[\d,]+) recipients, "
    r"(?P<rendered>[\d,]+) rendered, (?P<new_codes>[\d,]+) new codes, "
    r"(?P<reused_codes>[\d,]+) reused, (?P<skipped>[\d,]+) skipped, "
    r"(?P<failed>[\d,]+) failed in [\d.]+ s — [\d,]+ recipients/s$",
    re.MULTILINE,
)
#: How long a subprocess may take before the test gives up on it (a loaded CI box).
PROCESS_TIMEOUT = 180


@pytest.fixture
def run(db_url: str) -> Cli:
    return Cli(db_url)


@pytest.fixture
def welcome(run: Cli) -> str:
    """The sample pool ``welcome``: active, the 50 codes of welcome-codes.txt."""
    return create_pool_with_cli(run, "welcome", SAMPLES / "welcome-codes.txt")


# -- helpers -------------------------------------------------------------------


def create_pool_with_cli(run: Cli, pool_id: str, codes_file: Path | None = None) -> str:
    run.ok("pool", "create", pool_id, "--id", pool_id, "--description", "tests", "--activate")
    if codes_file is not None:
        run.ok("codes", "upload", pool_id, codes_file)
    return pool_id


def write_codes(path: Path, codes: Sequence[str]) -> Path:
    path.write_text("".join(f"{code}\n" for code in codes), encoding="utf-8")
    return path


def write_recipients(path: Path, ids: Sequence[str]) -> Path:
    rows = "".join(f"{rid},{rid}@example.com,Name {rid}\n" for rid in ids)
    path.write_text("id,email,first_name\n" + rows, encoding="utf-8")
    return path


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_template(path: Path, source: str) -> Path:
    path.write_text(source, encoding="utf-8")
    return path


def read_jsonl(source: Path | str) -> list[dict[str, Any]]:
    data = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def codes_of(messages: Sequence[dict[str, Any]], pool: str = "welcome") -> dict[str, str]:
    """recipient → code shown, checking that every recipient appears once."""
    shown = {m["recipient"]: m["codes"][pool] for m in messages}
    assert len(shown) == len(messages), "a recipient appears twice in the output"
    return shown


def summary_of(result: Result | str) -> dict[str, str]:
    stderr = result if isinstance(result, str) else result.stderr
    found = SUMMARY.findall(stderr)
    assert len(found) == 1, stderr
    match = SUMMARY.search(stderr)
    assert match is not None
    return {k: v.replace(",", "") for k, v in match.groupdict().items()}


def error_line(result: Result) -> str:
    """The ``Error:`` line that ends the stderr of a refused command."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), result.stderr
    return lines[-1]


def refused(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    return error_line(result)


def issued_codes(engine: Engine, mailing: str, pool: str = "welcome") -> dict[str, str]:
    """customer → code of the mailing's initial issuances, as the store records them."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT i.customer_id, c.code FROM issuances i JOIN codes c ON c.id = i.code_id "
                "WHERE i.mailing_id = :m AND i.pool_id = :p AND i.kind = 'initial'"
            ),
            {"m": mailing, "p": pool},
        ).all()
    issued = {str(customer): str(code) for customer, code in rows}
    assert len(issued) == len(rows), "a customer got two codes from one pool in one mailing"
    return issued


def code_states(engine: Engine, pool: str | None = None) -> Counter[str]:
    """state → codes: the stored status, ``reserved`` for codes an open reservation holds."""
    where = " WHERE pool_id = :p" if pool else ""
    held = "status = 'issued' AND reserved_token IN (SELECT token FROM held_codes)"
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT CASE WHEN {held} THEN 'reserved' ELSE status END AS state, count(*) "
                f"FROM codes{where} GROUP BY state"
            ),
            {"p": pool},
        ).all()
    return Counter({str(status): int(n) for status, n in rows})


def whole_store(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table (mailings, runs and schema version included)."""
    with engine.connect() as conn:
        return {
            table: sorted(
                repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"'))
            )
            for table in sorted(inspect(conn).get_table_names())
        }


# -- check ---------------------------------------------------------------------


def test_check_the_sample_welcome_template(run: Cli, welcome: str) -> None:
    result = run("check", WELCOME, "--recipients", SAMPLE_RECIPIENTS)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{WELCOME}: parts subject, text, html"
    assert lines[1].split() == ["pool", "id", "usage", "line", "status", "available"]
    assert lines[2].split() == ["welcome", "welcome", "issue", "9", "active", "50"]
    assert "client columns: first_name" in lines
    assert lines[-1] == "OK"
    assert result.stderr == ""


def test_check_json_document(run: Cli, welcome: str) -> None:
    document = run.json("check", WELCOME, "--recipients", SAMPLE_RECIPIENTS)
    assert document == {
        "template": str(WELCOME),
        "ok": True,
        "compiled": True,
        "parts": ["subject", "text", "html"],
        "pools": [
            {
                "pool": "welcome",
                "id": "welcome",
                "usage": "issue",
                "line": 9,
                "status": "active",
                "available": 50,
            }
        ],
        "columns": ["first_name"],
        "partials": [],
        "problems": [],
    }


def test_check_reports_reissues_and_a_body_only_template(run: Cli, welcome: str) -> None:
    reminder = run.json("check", REMINDER)
    assert reminder["ok"] is True
    assert [(p["pool"], p["usage"], p["line"]) for p in reminder["pools"]] == [
        ("welcome", "reissue", 6)
    ]
    create_pool_with_cli(run, "flash", SAMPLES / "flash-codes.csv")
    sms = run.json("check", SAMPLES / "sms.j2", "--recipients", SAMPLE_RECIPIENTS)
    assert sms["ok"] is True
    assert sms["parts"] == ["body"]
    assert [(p["id"], p["usage"], p["available"]) for p in sms["pools"]] == [("flash", "issue", 40)]
    assert sorted(sms["columns"]) == ["first_name", "vip"]


def test_check_a_syntax_error_names_template_and_line(run: Cli, tmp_path: Path) -> None:
    template = write_template(
        tmp_path / "broken.j2",
        "Hello {{ client.first_name }}\n\nYour code: {{ client.promocode('welcome') }\n",
    )
    result = run("check", template)
    line = refused(result)
    assert str(template) in line
    assert "line 3" in line
    assert "syntax error" in line
    # The console script prints the error alone: no "parts -", no empty pool table.
    console = subprocess.run(
        promomail_command(run.url, "check", template),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert (console.returncode, console.stdout) == (1, "")
    assert console.stderr.splitlines() == [line]

    as_json = run("check", template, "--json")
    assert as_json.exit_code == 1
    document = json.loads(as_json.stdout)
    assert (document["ok"], document["compiled"], document["parts"]) == (False, False, [])
    assert [p["line"] for p in document["problems"]] == [3]
    assert "line 3" in error_line(as_json)


@pytest.mark.parametrize(
    ("source", "line", "named"),
    [
        ("Hi\n\n{{ client.promocode('nosuch') }}\n", 3, "pool 'nosuch' does not exist"),
        ("Hi\n{{ client.promocode('drafty') }}\n", 2, "pool 'drafty' is draft"),
        (
            "{% set pool_var = 'welcome' %}\nHi\n\n\n{{ client.promocode(pool_var) }}\n",
            5,
            "client.promocode() needs the pool as a string literal",
        ),
        (
            "Hi {{ client.first_name }}\n{{ client.surname }} {{ client.promocode('welcome') }}\n",
            2,
            "client.surname is not a column of",
        ),
    ],
    ids=["unknown-pool", "draft-pool", "non-literal-pool", "missing-column"],
)
def test_check_names_each_problem_with_its_line(
    run: Cli, welcome: str, tmp_path: Path, source: str, line: int, named: str
) -> None:
    run.ok("pool", "create", "drafty", "--id", "drafty")
    template = write_template(tmp_path / "problem.j2", source)
    result = run("check", template, "--recipients", SAMPLE_RECIPIENTS)
    error = refused(result)
    assert f"{template}, line {line}: {named}" in error

    as_json = run("check", template, "--recipients", SAMPLE_RECIPIENTS, "--json")
    assert as_json.exit_code == 1
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert len(document["problems"]) == 1
    assert document["problems"][0]["line"] == line
    assert named in document["problems"][0]["message"]


def test_check_lists_every_problem(run: Cli, welcome: str, tmp_path: Path) -> None:
    run.ok("pool", "create", "drafty", "--id", "drafty")
    template = write_template(
        tmp_path / "many.j2",
        "{{ client.promocode('nosuch') }}\n"
        "{{ client.promocode('drafty') }}\n"
        "{% set p = 'welcome' %}{{ client.last_promocode(p) }}\n"
        "{{ client.surname }}\n",
    )
    result = run("check", template, "--recipients", SAMPLE_RECIPIENTS)
    assert result.exit_code == 1
    for line, named in [
        (1, "'nosuch' does not exist"),
        (2, "'drafty' is draft"),
        (3, "client.last_promocode() needs the pool as a string literal"),
        (4, "client.surname is not a column"),
    ]:
        assert re.search(
            rf"^{re.escape(str(template))}, line {line}: .*{re.escape(named)}",
            result.stderr,
            re.MULTILINE,
        ), result.stderr
    assert "(and 3 more problems)" in error_line(result)


# -- preview -------------------------------------------------------------------


def test_preview_shows_a_placeholder_naming_the_pool(run: Cli, welcome: str) -> None:
    result = run("preview", WELCOME, "--recipient", "id=c1", "--recipient", "first_name=Ada")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith("=== c1\n")
    assert [line for line in out.splitlines() if line.startswith("--- ")] == [
        "--- subject",
        "--- text",
        "--- html",
    ]
    assert "Welcome to Northwind Coffee, Ada!" in out
    assert out.count(PLACEHOLDER) == 2  # the text and the html part
    real_codes = (SAMPLES / "welcome-codes.txt").read_text().split()
    assert not any(code in out for code in real_codes)
    assert not re.search(r"WELCOME-[A-Z0-9]{8}", out)


def test_preview_placeholder_names_the_pool_id_when_the_template_uses_its_name(
    run: Cli, welcome: str, tmp_path: Path
) -> None:
    run.ok("pool", "create", "Spring Sale", "--id", "spring", "--description", "x", "--activate")
    template = write_template(tmp_path / "named.j2", "{{ client.promocode('Spring Sale') }}")
    shown = run.json("preview", template)
    assert shown == [
        {"recipient": "preview", "parts": {"body": "[[promocode from spring]]"}, "error": None}
    ]


def test_preview_the_first_recipients_of_a_file(run: Cli, welcome: str) -> None:
    result = run("preview", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--limit", "2")
    assert result.exit_code == 0, result.stderr
    assert re.findall(r"^=== (\S+)$", result.stdout, re.MULTILINE) == ["cust-001", "cust-002"]
    assert "Ada" in result.stdout and "Grace" in result.stdout

    shown = run.json("preview", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--limit", "3")
    assert [p["recipient"] for p in shown] == ["cust-001", "cust-002", "cust-003"]
    assert all(PLACEHOLDER in p["parts"]["text"] for p in shown)


def test_preview_one_part(run: Cli, welcome: str) -> None:
    result = run("preview", WELCOME, "--recipient", "first_name=Grace", "--part", "subject")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "=== preview\n--- subject\nWelcome to Northwind Coffee, Grace!\n"

    shown = run.json("preview", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--part", "html")
    assert [sorted(p["parts"]) for p in shown] == [["html"]] * 3

    unknown = run("preview", WELCOME, "--recipient", "first_name=Grace", "--part", "footer")
    assert "no part 'footer'" in refused(unknown)


def test_preview_variables(run: Cli, welcome: str, tmp_path: Path) -> None:
    template = write_template(
        tmp_path / "vars.j2", "{{ campaign }} for {{ client.first_name }}: {{ note }}"
    )
    shown = run.json(
        "preview",
        template,
        "--recipient",
        "first_name=Ada",
        "--var",
        "campaign=Spring",
        "--var",
        "note=a=b",
    )
    assert shown[0]["parts"] == {"body": "Spring for Ada: a=b"}


def test_preview_a_recipient_without_a_column_fails_naming_it(
    run: Cli, welcome: str, tmp_path: Path
) -> None:
    result = run("preview", WELCOME, "--recipient", "id=c7")
    refused(result)
    assert re.search(r"recipient c7: .*first_name", result.stderr), result.stderr

    recipients = write_jsonl(
        tmp_path / "r.jsonl",
        [{"id": "a1", "first_name": "Ann"}, {"id": "a2", "email": "a2@example.com"}],
    )
    mixed = run("preview", WELCOME, "--recipients", recipients)
    refused(mixed)
    assert "=== a1" in mixed.stdout and "Welcome to Northwind Coffee, Ann!" in mixed.stdout
    assert re.search(r"recipient a2: .*first_name", mixed.stderr), mixed.stderr
    assert "recipient a1" not in mixed.stderr


def test_preview_shows_the_real_last_code(run: Cli, welcome: str) -> None:
    rendered = read_jsonl(
        run.ok("render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "w1").stdout
    )
    ada_code = codes_of(rendered)["cust-001"]
    shown = run.json(
        "preview", REMINDER, "--recipient", "id=cust-001", "--recipient", "first_name=Ada"
    )
    assert ada_code in shown[0]["parts"]["text"]
    assert ada_code in shown[0]["parts"]["html"]
    never = run.json("preview", REMINDER, "--recipient", "id=new", "--recipient", "first_name=N")
    assert "still waiting for you" in never[0]["parts"]["text"]
    assert "WELCOME-" not in never[0]["parts"]["text"]


def test_preview_and_check_write_nothing(
    run: Cli, welcome: str, engine: Engine, tmp_path: Path
) -> None:
    run.ok("render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "w1")
    run.ok("pool", "create", "drafty", "--id", "drafty")
    broken = write_template(tmp_path / "broken.j2", "{{ client.promocode('drafty') }}{% if %}")
    problems = write_template(
        tmp_path / "problems.j2", "{{ client.promocode('drafty') }}{{ client.nope }}"
    )
    before = whole_store(engine)

    run.ok("check", WELCOME, "--recipients", SAMPLE_RECIPIENTS)
    run.ok("check", REMINDER, "--json")
    assert run("check", broken).exit_code == 1
    assert run("check", problems, "--recipients", SAMPLE_RECIPIENTS).exit_code == 1
    run.ok("preview", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--limit", "8")
    run.ok("preview", WELCOME, "--recipient", "id=cust-001", "--recipient", "first_name=A")
    # In a render, showing the last code again records a reissue; a preview does not.
    reminder = run.json("preview", REMINDER, "--recipients", SAMPLE_RECIPIENTS, "--limit", "8")
    assert reminder and all(p["parts"] is not None for p in reminder)
    assert all("WELCOME-" in p["parts"]["text"] for p in reminder)
    assert run("preview", WELCOME, "--recipient", "id=x").exit_code == 1
    assert run("preview", problems).exit_code == 1

    assert whole_store(engine) == before


# -- render: outputs -----------------------------------------------------------


def test_render_jsonl_to_a_file(run: Cli, welcome: str, engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "out" / "welcome.jsonl"
    result = run(
        "render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "w1", "--out", out
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert summary_of(result) == {
        "mailing": "w1",
        "shard": "all",
        "recipients": "8",
        "rendered": "8",
        "new_codes": "8",
        "reused_codes": "0",
        "skipped": "0",
        "failed": "0",
    }
    assert f"Output: {out}" in result.stderr

    messages = read_jsonl(out)
    assert [m["recipient"] for m in messages] == SAMPLE_IDS
    first = messages[0]
    assert set(first) == {"mailing", "recipient", "ref", "to", "parts", "codes"}
    assert first["mailing"] == "w1"
    assert first["to"] == "ada@example.com"
    assert set(first["parts"]) == {"subject", "text", "html"}
    assert first["parts"]["subject"] == "Welcome to Northwind Coffee, Ada!"
    shown = codes_of(messages)
    assert len(set(shown.values())) == 8
    assert set(shown.values()) <= set((SAMPLES / "welcome-codes.txt").read_text().split())
    for message in messages:
        code = message["codes"]["welcome"]
        assert code in message["parts"]["text"]
        assert code in message["parts"]["html"]
    assert issued_codes(engine, "w1") == shown
    assert code_states(engine, "welcome") == Counter({"available": 42, "issued": 8})


def test_render_jsonl_to_stdout(run: Cli, welcome: str, engine: Engine) -> None:
    result = run("render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "w1")
    assert result.exit_code == 0, result.stderr
    messages = read_jsonl(result.stdout)
    assert [m["recipient"] for m in messages] == SAMPLE_IDS
    assert codes_of(messages) == issued_codes(engine, "w1")
    assert summary_of(result)["rendered"] == "8"
    assert "Output:" not in result.stderr


def test_render_json_summary(run: Cli, welcome: str, tmp_path: Path) -> None:
    out = tmp_path / "w.jsonl"
    result = run(
        "render",
        WELCOME,
        "--recipients",
        SAMPLE_RECIPIENTS,
        "--mailing",
        "w1",
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["seconds"] >= 0
    assert document["recipients_per_second"] >= 0
    del document["seconds"], document["recipients_per_second"]
    assert document == {
        "mailing": "w1",
        "shard": "all",
        "status": "finished",
        "output": str(out),
        "recipients": 8,
        "rendered": 8,
        "new_codes": 8,
        "reused_codes": 0,
        "skipped": 0,
        "failed": 0,
        "stopped_at_pool": None,
        "failures": [],
        "skipped_recipients": [],
        "duplicates": [],
        "low_stock": [],
    }
    assert summary_of(result)["rendered"] == "8"  # the summary line still goes to stderr


def test_render_eml_files(run: Cli, welcome: str, engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "eml"
    result = run(
        "render",
        WELCOME,
        "--recipients",
        SAMPLE_RECIPIENTS,
        "--mailing",
        "w1",
        "--format",
        "eml",
        "--out",
        folder,
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert summary_of(result)["rendered"] == "8"
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"{rid}.eml" for rid in SAMPLE_IDS]
    issued = issued_codes(engine, "w1")
    emails = {
        "ada@example.com": ("cust-001", "Ada"),
        "katherine@example.com": ("cust-004", "Katherine"),
    }
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        assert message.get_content_type() == "multipart/alternative"
        assert message["Subject"].startswith("Welcome to Northwind Coffee, ")
        recipient = message["X-Promomail-Recipient"]
        assert path.name == f"{recipient}.eml"
        text_part = message.get_body(("plain",))
        html_part = message.get_body(("html",))
        assert text_part is not None and html_part is not None
        text_body = text_part.get_content()
        html_body = html_part.get_content()
        assert issued[recipient] in text_body
        assert issued[recipient] in html_body
        assert "<code>" in html_body and "<code>" not in text_body
        if message["To"] in emails:
            assert emails[message["To"]][0] == recipient
            assert f"Hi {emails[message['To']][1]}," in text_body
    ada = email.message_from_bytes(
        (folder / "cust-001.eml").read_bytes(), policy=email.policy.default
    )
    assert ada["To"] == "ada@example.com"


def test_render_the_same_mailing_again_gives_the_same_codes(
    run: Cli, welcome: str, engine: Engine, tmp_path: Path
) -> None:
    first_out, second_out = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    common = ("render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "w1")
    first = json.loads(run.ok(*common, "--out", first_out, "--json").stdout)
    second = json.loads(run.ok(*common, "--out", second_out, "--json").stdout)
    assert (first["new_codes"], first["reused_codes"]) == (8, 0)
    assert (second["new_codes"], second["reused_codes"]) == (0, 8)
    assert read_jsonl(first_out) == read_jsonl(second_out)
    assert issued_codes(engine, "w1") == codes_of(read_jsonl(second_out))
    assert code_states(engine, "welcome") == Counter({"available": 42, "issued": 8})

    # Another mailing id is another mailing: new codes.
    other = read_jsonl(
        run.ok("render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "w2").stdout
    )
    assert not set(codes_of(other).values()) & set(codes_of(read_jsonl(first_out)).values())


def test_render_variables_reach_the_template(run: Cli, welcome: str, tmp_path: Path) -> None:
    template = write_template(
        tmp_path / "vars.j2",
        "{{ campaign }} for {{ client.first_name }}: {{ client.promocode('welcome') }} ({{ until }})",
    )
    result = run.ok(
        "render",
        template,
        "--recipients",
        SAMPLE_RECIPIENTS,
        "--mailing",
        "v1",
        "--var",
        "campaign=Spring",
        "--var",
        "until=May 31",
    )
    for message in read_jsonl(result.stdout):
        code = message["codes"]["welcome"]
        assert message["parts"]["body"].startswith("Spring for ")
        assert message["parts"]["body"].endswith(f": {code} (May 31)")

    missing = run("render", template, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "v2")
    refused(missing)
    assert "'campaign' is undefined" in missing.stderr


# -- render: running out, failures -------------------------------------------


def test_render_refused_when_the_pool_cannot_cover_it(
    run: Cli, engine: Engine, tmp_path: Path
) -> None:
    create_pool_with_cli(
        run, "welcome", write_codes(tmp_path / "c.txt", [f"W-{i}" for i in range(5)])
    )
    before = whole_store(engine)
    out = tmp_path / "w.jsonl"
    result = run(
        "render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "w1", "--out", out
    )
    line = refused(result)
    assert line == (
        "Error: pool 'welcome' cannot cover the mailing: needed 8, available 5; add 3 codes or "
        "more (codes upload welcome FILE, or codes generate welcome --count 3), or render with "
        "--on-exhausted skip (those recipients are left out) or blank (they get an empty code)"
    )
    assert not out.exists()
    assert whole_store(engine) == before


def test_preflight_counts_only_recipients_still_without_a_code(
    run: Cli, engine: Engine, tmp_path: Path
) -> None:
    create_pool_with_cli(
        run, "welcome", write_codes(tmp_path / "c.txt", [f"W-{i}" for i in range(5)])
    )
    five = write_recipients(tmp_path / "five.csv", [f"r{i}" for i in range(5)])
    eight = write_recipients(tmp_path / "eight.csv", [f"r{i}" for i in range(8)])
    first = codes_of(
        read_jsonl(run.ok("render", WELCOME, "--recipients", five, "--mailing", "m").stdout)
    )
    assert len(first) == 5

    before = whole_store(engine)
    line = refused(run("render", WELCOME, "--recipients", eight, "--mailing", "m"))
    assert "'welcome'" in line and "needed 3" in line and "available 0" in line
    assert whole_store(engine) == before

    run.ok("codes", "upload", "welcome", write_codes(tmp_path / "more.txt", ["X-1", "X-2", "X-3"]))
    result = run.ok("render", WELCOME, "--recipients", eight, "--mailing", "m")
    final = codes_of(read_jsonl(result.stdout))
    assert {k: final[k] for k in first} == first
    assert sorted(v for k, v in final.items() if k not in first) == ["X-1", "X-2", "X-3"]
    assert (summary_of(result)["new_codes"], summary_of(result)["reused_codes"]) == ("3", "5")


def test_on_exhausted_skip_leaves_recipients_out_and_lists_them(
    run: Cli, engine: Engine, tmp_path: Path
) -> None:
    create_pool_with_cli(
        run, "welcome", write_codes(tmp_path / "c.txt", [f"W-{i}" for i in range(5)])
    )
    out = tmp_path / "w.jsonl"
    common = ("render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "w1", "--out", out)
    result = run(*common, "--on-exhausted", "skip", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["rendered"], document["skipped"], document["new_codes"]) == (5, 3, 5)
    skipped = [s["recipient"] for s in document["skipped_recipients"]]
    rendered = codes_of(read_jsonl(out))
    assert sorted([*skipped, *rendered]) == SAMPLE_IDS
    for recipient in skipped:
        line = SAMPLE_IDS.index(recipient) + 2
        assert (
            f"recipient {recipient} (line {line}) skipped: pool 'welcome' ran out of codes"
            in result.stderr
        )
    assert summary_of(result)["skipped"] == "3"
    assert issued_codes(engine, "w1") == rendered
    assert code_states(engine, "welcome") == Counter({"issued": 5})

    # With more codes, the same mailing serves the skipped recipients.
    run.ok("codes", "upload", "welcome", write_codes(tmp_path / "more.txt", ["X-1", "X-2", "X-3"]))
    again = json.loads(run.ok(*common, "--json").stdout)
    assert (again["new_codes"], again["reused_codes"], again["skipped"]) == (3, 5, 0)
    final = codes_of(read_jsonl(out))
    assert sorted(final) == SAMPLE_IDS
    assert {k: final[k] for k in rendered} == rendered


def test_on_exhausted_blank_renders_an_empty_code(run: Cli, engine: Engine, tmp_path: Path) -> None:
    create_pool_with_cli(
        run, "welcome", write_codes(tmp_path / "c.txt", [f"W-{i}" for i in range(5)])
    )
    result = run(
        "render",
        WELCOME,
        "--recipients",
        SAMPLE_RECIPIENTS,
        "--mailing",
        "w1",
        "--on-exhausted",
        "blank",
    )
    assert result.exit_code == 0, result.stderr
    messages = read_jsonl(result.stdout)
    assert [m["recipient"] for m in messages] == SAMPLE_IDS
    shown = codes_of(messages)
    blanks = [r for r, code in shown.items() if code == ""]
    assert len(blanks) == 3
    for message in messages:
        if message["recipient"] in blanks:
            assert "W-" not in message["parts"]["text"]
    assert issued_codes(engine, "w1") == {r: c for r, c in shown.items() if c}
    assert summary_of(result)["new_codes"] == "5"
    assert code_states(engine, "welcome") == Counter({"issued": 5})


def test_a_recipient_that_fails_consumes_nothing_and_the_others_go_on(
    run: Cli, welcome: str, engine: Engine, tmp_path: Path
) -> None:
    people = [
        {"id": "j1", "email": "j1@example.com", "first_name": "Ann"},
        {"id": "j2", "email": "j2@example.com"},
        {"id": "j3", "email": "j3@example.com", "first_name": "Cy"},
    ]
    recipients = write_jsonl(tmp_path / "people.jsonl", people)
    out = tmp_path / "w.jsonl"
    common = ("render", WELCOME, "--recipients", recipients, "--mailing", "w1", "--out", out)
    result = run(*common, "--json")
    line = refused(result)
    assert "1 recipient could not be rendered" in line
    assert re.search(r"^recipient j2 \(line 2\) failed: .*first_name", result.stderr, re.MULTILINE)
    summary = summary_of(result)
    assert (summary["rendered"], summary["failed"], summary["new_codes"]) == ("2", "1", "2")
    document = json.loads(result.stdout)
    assert document["failed"] == 1
    assert [(f["recipient"], f["line"]) for f in document["failures"]] == [("j2", 2)]
    assert "first_name" in document["failures"][0]["reason"]
    rendered = codes_of(read_jsonl(out))
    assert sorted(rendered) == ["j1", "j3"]
    assert issued_codes(engine, "w1") == rendered
    assert code_states(engine, "welcome") == Counter({"available": 48, "issued": 2})
    assert run.json("mailing", "show", "w1")["failed"] == 1

    # Fixed, the same mailing renders j2 and keeps the others' codes.
    people[1]["first_name"] = "Bo"
    write_jsonl(recipients, people)
    again = json.loads(run.ok(*common, "--json").stdout)
    assert (again["new_codes"], again["reused_codes"], again["failed"]) == (1, 2, 0)
    final = codes_of(read_jsonl(out))
    assert sorted(final) == ["j1", "j2", "j3"]
    assert {k: final[k] for k in rendered} == rendered


# -- render: workers and shards ------------------------------------------------


def test_render_with_two_worker_processes(
    run: Cli, welcome: str, engine: Engine, tmp_path: Path
) -> None:
    ids = [f"p{i:03d}" for i in range(40)]
    recipients = write_recipients(tmp_path / "r.csv", ids)
    out = tmp_path / "w.jsonl"
    result = subprocess.run(
        promomail_command(
            run.url,
            "render",
            WELCOME,
            "--recipients",
            recipients,
            "--mailing",
            "wk",
            "--out",
            out,
            "--workers",
            "2",
            "--json",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=PROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["recipients"], document["rendered"], document["new_codes"]) == (40, 40, 40)
    assert summary_of(result.stderr)["rendered"] == "40"
    shown = codes_of(read_jsonl(out))
    assert sorted(shown) == ids
    assert len(set(shown.values())) == 40
    assert issued_codes(engine, "wk") == shown
    assert code_states(engine, "welcome") == Counter({"available": 10, "issued": 40})
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".w.jsonl")]
    assert leftovers == [], "the workers' part files are joined and removed"


def test_shards_together_cover_every_recipient_once(
    run: Cli, welcome: str, engine: Engine, tmp_path: Path
) -> None:
    ids = [f"s{i:03d}" for i in range(40)]
    recipients = write_recipients(tmp_path / "r.csv", ids)
    common = ("render", WELCOME, "--recipients", recipients, "--mailing", "sh")
    one = run.ok(*common, "--shard", "1/2")
    two = run.ok(*common, "--shard", "2/2")
    assert summary_of(one)["shard"] == "1/2" and summary_of(two)["shard"] == "2/2"
    first, second = codes_of(read_jsonl(one.stdout)), codes_of(read_jsonl(two.stdout))
    assert first and second, "a stable hash splits 40 ids over both shards"
    assert not set(first) & set(second)
    assert sorted([*first, *second]) == ids
    assert len(set(first.values()) | set(second.values())) == 40
    assert issued_codes(engine, "sh") == {**first, **second}

    shown = run.json("mailing", "show", "sh")
    assert (shown["recipients"], shown["rendered"], shown["codes_issued"]) == (40, 40, 40)
    assert [(r["shard"], r["rendered"]) for r in shown["runs"]] == [
        ("1/2", len(first)),
        ("2/2", len(second)),
    ]
    text_view = run.ok("mailing", "show", "sh").stdout
    assert re.search(r"^1/2\s+finished\s+\d+", text_view, re.MULTILINE)

    # A shard again is a re-run of that shard only.
    again = run.ok(*common, "--shard", "1/2")
    assert codes_of(read_jsonl(again.stdout)) == first
    assert summary_of(again)["new_codes"] == "0"


@pytest.mark.parametrize(
    "options",
    [
        ["--shard", "x"],
        ["--shard", "3/2"],
        ["--shard", "0/2"],
        ["--shard", "1/0"],
        ["--json"],
        ["--var", "novalue"],
        ["--var", "=value"],
        ["--format", "eml"],
        ["--workers", "0"],
        ["--on-exhausted", "wait"],
    ],
    ids=lambda options: " ".join(options),
)
def test_render_usage_errors_exit_2(
    run: Cli, welcome: str, engine: Engine, options: list[str]
) -> None:
    before = whole_store(engine)
    result = run("render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "u", *options)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "Error:" in result.stderr
    assert result.stdout == ""
    assert whole_store(engine) == before


def test_render_missing_options_are_usage_errors(run: Cli, welcome: str) -> None:
    no_mailing = run("render", WELCOME, "--recipients", SAMPLE_RECIPIENTS)
    assert no_mailing.exit_code == 2 and "--mailing" in no_mailing.stderr
    no_recipients = run("render", WELCOME, "--mailing", "m")
    assert no_recipients.exit_code == 2 and "--recipients" in no_recipients.stderr


# -- render: a signal in the middle ------------------------------------------

SIGNAL_RECIPIENTS = 3000


def _wait_for_issuances(engine: Engine, mailing: str, process: subprocess.Popen[str]) -> None:
    """Until the render has recorded something (bounded; waits on the process between polls)."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        if count_issuances(engine, mailing) > 0:
            return
        try:
            process.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            continue
        _, stderr = process.communicate()
        pytest.fail(f"the render ended before any issuance was seen: {stderr}")
    pytest.fail(f"no issuance recorded within {PROCESS_TIMEOUT} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_render_after_the_chunk_in_hand(
    run: Cli, engine: Engine, tmp_path: Path, signum: signal.Signals
) -> None:
    create_pool_with_cli(run, "w")
    run.ok("codes", "generate", "w", "--count", str(SIGNAL_RECIPIENTS + 500))
    ids = [f"r{i:05d}" for i in range(SIGNAL_RECIPIENTS)]
    recipients = write_recipients(tmp_path / "many.csv", ids)
    template = write_template(
        tmp_path / "m.j2",
        "{% block subject %}Hi {{ client.first_name }}{% endblock %}"
        "{% block text %}Your code: {{ client.promocode('w') }}{% endblock %}",
    )
    out = tmp_path / "out.jsonl"
    command = ("render", template, "--recipients", recipients, "--mailing", "sig", "--out", out)

    process = subprocess.Popen(
        promomail_command(run.url, *command, "--chunk-size", "20"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_issuances(engine, "sig", process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "run the same command again to resume" in stderr
    assert stderr.strip().splitlines()[-1].startswith("Error: interrupted")
    assert code_states(engine)["reserved"] == 0
    issued = issued_codes(engine, "sig", "w")
    assert 0 < len(issued) < SIGNAL_RECIPIENTS, "the signal came after the render had finished"
    assert code_states(engine, "w") == Counter(
        {"issued": len(issued), "available": SIGNAL_RECIPIENTS + 500 - len(issued)}
    )
    # The output of the interrupted run shows exactly what the store recorded.
    if out.exists():
        assert codes_of(read_jsonl(out), "w") == issued
    assert run.json("mailing", "show", "sig")["status"] == "interrupted"

    # The same command again completes the mailing and keeps the first codes.
    again = json.loads(run.ok(*command, "--json").stdout)
    assert again["status"] == "finished"
    assert (again["new_codes"], again["reused_codes"]) == (
        SIGNAL_RECIPIENTS - len(issued),
        len(issued),
    )
    final = codes_of(read_jsonl(out), "w")
    assert sorted(final) == ids
    assert len(set(final.values())) == SIGNAL_RECIPIENTS
    assert {k: final[k] for k in issued} == issued
    assert issued_codes(engine, "sig", "w") == final
    assert code_states(engine, "w") == Counter({"issued": SIGNAL_RECIPIENTS, "available": 500})
    assert run.json("mailing", "show", "sig")["status"] == "finished"


# -- mailings, mailing show ----------------------------------------------------


def _table(stdout: str) -> list[list[str]]:
    """Rows of an aligned table, cells split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines() if line.strip()]


def test_mailings_lists_every_mailing(run: Cli, welcome: str, tmp_path: Path) -> None:
    assert run.ok("mailings").stdout == "(no mailings)\n"
    assert run.json("mailings") == []

    run.ok("render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "w1")
    recipients = write_jsonl(
        tmp_path / "r.jsonl",
        [{"id": "a", "first_name": "A"}, {"id": "b"}, {"id": "c", "first_name": "C"}],
    )
    assert run("render", WELCOME, "--recipients", recipients, "--mailing", "w2").exit_code == 1

    rows = _table(run.ok("mailings").stdout)
    assert rows[0] == [
        "id",
        "status",
        "recipients",
        "rendered",
        "codes",
        "failed",
        "started",
        "finished",
        "redeemed",
        "redemption rate",
        "sent",
        "delivered",
        "bounced",
        "refused",
        "deferred",
        "codes returned",
    ]
    assert [row[:6] for row in rows[1:]] == [
        ["w1", "finished", "8", "8", "8", "0"],
        ["w2", "finished", "3", "2", "2", "1"],
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row[6]) for row in rows[1:])

    listed = run.json("mailings")
    assert [m["id"] for m in listed] == ["w1", "w2"]
    w1 = listed[0]
    assert {k: w1[k] for k in ("status", "recipients", "rendered", "codes_issued", "failed")} == {
        "status": "finished",
        "recipients": 8,
        "rendered": 8,
        "codes_issued": 8,
        "failed": 0,
    }
    assert w1["template"] == str(WELCOME)
    assert w1["started_at"] and w1["finished_at"]
    assert w1["started_at"] <= w1["finished_at"]
    assert listed[1]["failed"] == 1 and listed[1]["codes_issued"] == 2


def test_mailing_show(run: Cli, welcome: str) -> None:
    common = ("render", WELCOME, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "w1")
    run.ok(*common)
    run.ok(*common)  # a re-run adds no codes
    run.ok("render", REMINDER, "--recipients", SAMPLE_RECIPIENTS, "--mailing", "r1")

    fields = {
        row[0]: row[1] if len(row) > 1 else ""
        for row in _table(run.ok("mailing", "show", "w1").stdout)
    }
    assert fields["mailing"] == "w1"
    assert fields["status"] == "finished"
    assert fields["template"] == str(WELCOME)
    assert fields["recipients file"] == str(SAMPLE_RECIPIENTS)
    assert (fields["recipients"], fields["rendered"], fields["codes issued"]) == ("8", "8", "8")
    assert (fields["reissues"], fields["failed"], fields["skipped"]) == ("0", "0", "0")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", fields["finished"])

    shown = run.json("mailing", "show", "w1")
    assert shown["id"] == "w1" and shown["status"] == "finished"
    assert (shown["recipients"], shown["rendered"], shown["codes_issued"]) == (8, 8, 8)
    assert [(r["shard"], r["new_codes"], r["reused_codes"]) for r in shown["runs"]] == [
        ("all", 0, 8)
    ]
    reminder = run.json("mailing", "show", "r1")
    assert (reminder["codes_issued"], reminder["reissues"]) == (0, 8)


def test_mailing_show_says_what_is_true_and_always_lists_its_runs(run: Cli, welcome: str) -> None:
    shard_one = ("--recipients", SAMPLE_RECIPIENTS, "--mailing", "w1", "--shard", "1/2")
    run.ok("render", WELCOME, *shard_one)

    def show() -> list[list[str]]:
        # The console script itself: what a person at a terminal reads.
        shown = subprocess.run(
            promomail_command(run.url, "mailing", "show", "w1"),
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
        )
        assert (shown.returncode, shown.stderr) == (0, ""), shown.stderr
        return _table(shown.stdout)

    rows = show()
    assert ["status", "partial: 1 of 2 shards rendered"] in rows
    header = rows.index(["runs (the latest of each shard):"])
    assert rows[header + 1][:4] == ["shard", "status", "recipients", "rendered"]
    assert [row[:2] for row in rows[header + 2 :]] == [["1/2", "finished"]]
    listed = _table(run.ok("mailings").stdout)
    assert listed[1][:2] == ["w1", "partial: 1 of 2 shards rendered"]
    assert run.json("mailing", "show", "w1")["status_text"] == "partial: 1 of 2 shards rendered"

    run.ok("mailing", "cancel", "w1", "--yes")
    rows = show()
    assert ["status", "cancelled"] in rows
    assert any(row[0] == "cancelled" and re.fullmatch(r"[\d-]+ [\d:]+", row[1]) for row in rows)
    shown = run.json("mailing", "show", "w1")
    assert (shown["status"], shown["status_text"]) == ("cancelled", "cancelled")
    assert shown["cancelled_at"] is not None


def test_unknown_mailing_is_named(run: Cli) -> None:
    line = refused(run("mailing", "show", "nope"))
    assert "mailing 'nope'" in line
    as_json = run("mailing", "show", "nope", "--json")
    assert as_json.exit_code == 1 and as_json.stdout == ""
    assert "mailing 'nope'" in error_line(as_json)


# -- the demo script -----------------------------------------------------------


def test_the_demo_script_runs(tmp_path: Path) -> None:
    script = promomail_script()
    env = {**os.environ, "PATH": f"{script.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PROMOMAIL_DB", None)
    folder = tmp_path / "demo"
    result = subprocess.run(
        ["bash", str(SAMPLES / "demo.sh"), str(folder)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=PROCESS_TIMEOUT * 2,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    welcome_codes = codes_of(read_jsonl(folder / "welcome.jsonl"))
    assert sorted(welcome_codes) == SAMPLE_IDS
    assert len(set(welcome_codes.values())) == 8
    emls = sorted((folder / "welcome-eml").glob("*.eml"))
    assert [p.stem for p in emls] == SAMPLE_IDS
    for path in emls:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(("plain",))
        assert body is not None
        assert welcome_codes[path.stem] in body.get_content()
    sms = read_jsonl(folder / "sms.jsonl")
    assert sms  # the SMS mailing rendered someone
    assert all(m["codes"]["flash"].startswith("FLASH-") for m in sms)
    assert "welcome-demo" in result.stdout and "flash-sms-demo" in result.stdout
