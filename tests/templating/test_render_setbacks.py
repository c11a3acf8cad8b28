"""Recipients a render did not render, and ids the file repeats: told briefly, kept in full.

Repeated failures of one kind (recipients skipped for an empty pool, failed
for one reason) are summarised on stderr: a few examples, then a count by
reason. Every one goes to ``--json`` and to ``--failures FILE``. An id the
recipients file holds twice is rendered once and reported with both lines.
Every store test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from sqlalchemy import Engine

from promomail.pools.digests import Digest, digest
from promomail.templating.mailing.recipients import Duplicate, Shard
from tests.support.cli_helpers import Cli
from tests.support.render_helpers import pool_with_codes, read_jsonl, render, write_template

#: The text divides by a column: 0 fails the recipient with a ZeroDivisionError.
TEMPLATE = """\
{% block subject %}Hi {{ client.first_name }}{% endblock %}
{% block text %}{{ 100 // client.n|int }} {{ client.promocode('spring') }}{% endblock %}
"""


def _people(path: Path, rows: list[tuple[str, str, str]]) -> str:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email", "first_name", "n"])
        writer.writerows((rid, email, "Ann", n) for rid, email, n in rows)
    return str(path)


#: 300 recipients: 200 whose address is not one (every third is fine), of
#: which 100 also divide by zero, and 50 more that only divide by zero.
def _troubled(folder: Path) -> str:
    rows = []
    for i in range(450):
        good_address = i % 3 == 0
        email = f"r{i}@example.com" if good_address else f"not-an-address-{i}"
        n = "0" if (good_address and i % 2 == 0) else "5"
        rows.append((f"r{i:03d}", email, n))
    return _people(folder / "people.csv", rows)


def test_a_digest_shows_a_short_list_whole_and_a_long_one_by_kind() -> None:
    short = digest(range(5), lambda i: f"item {i}", lambda i: "odd" if i % 2 else "even")
    assert short == Digest(5, tuple(f"item {i}" for i in range(5)))
    assert short.whole and short.lines("failed") == [f"item {i}" for i in range(5)]

    kinds = [f"kind {i % 13}" for i in range(1000)] + ["rare"]
    long = digest(range(1001), lambda i: f"item {i}", lambda i: kinds[i], kinds=3)
    assert not long.whole and long.examples == ("item 0", "item 1", "item 2")
    assert long.kinds == (("kind 0", 77), ("kind 1", 77), ("kind 2", 77))
    assert (long.other_kinds, long.other_items) == (11, 1001 - 3 * 77)
    assert long.lines("failed") == [
        "item 0",
        "item 1",
        "item 2",
        "… and 998 more: 1,001 failed in all, by reason:",
        "  77  kind 0",
        "  77  kind 1",
        "  77  kind 2",
        "  770  for 11 other reasons",
    ]


def test_many_failures_are_summarised_and_written_out_in_full(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    run = Cli(db_url)
    pool_with_codes(engine, "spring", 1_000)
    template = write_template(tmp_path, TEMPLATE)
    people = _troubled(tmp_path)
    out = tmp_path / "out.jsonl"
    common = ("render", template, "--recipients", people, "--mailing", "m1", "--out", out)

    result = run(*common)

    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    # A few examples, the count by reason, where the full list is: no line per recipient.
    assert len(lines) <= 12, result.stderr
    assert lines[:3] == [
        f"recipient r000 (line 2) failed: {template}, line 2: ZeroDivisionError: integer "
        "division or modulo by zero",
        f"recipient r001 (line 3) failed: {people}, line 3, column 'email': "
        "'not-an-address-1' is not an e-mail address (addr-spec local part with no domain)",
        f"recipient r002 (line 4) failed: {people}, line 4, column 'email': "
        "'not-an-address-2' is not an e-mail address (addr-spec local part with no domain)",
    ]
    assert lines[3] == "… and 372 more: 375 failed in all, by reason:"
    assert lines[4] == f"  300  {people}, column 'email': not exactly one e-mail address"
    assert re.fullmatch(rf"   75  {re.escape(template)}, line 2: ZeroDivisionError: .*", lines[5])
    assert lines[6] == (
        "Every recipient not rendered, with its line and reason: --failures FILE, or --json."
    )
    assert "375 failed" in lines[7] and lines[-1] == "Error: 375 recipients could not be rendered"
    assert len(read_jsonl(out)) == 75

    # The same mailing again: every failure in the file and in the JSON document.
    failures = tmp_path / "failures.csv"
    again = run(*common, "--failures", failures, "--json")
    assert again.exit_code == 1
    document = json.loads(again.stdout)
    assert document["failed"] == 375 and len(document["failures"]) == 375
    assert {f["recipient"] for f in document["failures"]} == {
        f"r{i:03d}" for i in range(450) if i % 3 or i % 2 == 0
    }
    with failures.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], int(r["line"]), r["outcome"], r["reason"]) for r in rows] == [
        (f["recipient"], f["line"], "failed", f["reason"]) for f in document["failures"]
    ]
    assert "--failures FILE" not in again.stderr

    as_lines = tmp_path / "failures.jsonl"
    run(*common, "--failures", as_lines)
    written = read_jsonl(as_lines)
    assert written == [{**f, "outcome": "failed"} for f in document["failures"]]


def test_recipients_skipped_for_an_empty_pool_are_summarised(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    run = Cli(db_url)
    pool_with_codes(engine, "spring", 5)
    template = write_template(tmp_path, TEMPLATE)
    people = _people(tmp_path / "p.csv", [(f"p{i}", f"p{i}@x.org", "1") for i in range(200)])
    out = tmp_path / "out.jsonl"
    failures = tmp_path / "left-out.jsonl"
    result = run(
        "render",
        template,
        "--recipients",
        people,
        "--mailing",
        "m1",
        "--out",
        out,
        "--on-exhausted",
        "skip",
        "--failures",
        failures,
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[:5] == [
        "recipient p5 (line 7) skipped: pool 'spring' ran out of codes",
        "recipient p6 (line 8) skipped: pool 'spring' ran out of codes",
        "recipient p7 (line 9) skipped: pool 'spring' ran out of codes",
        "… and 192 more: 195 skipped in all, by reason:",
        "  195  pool 'spring' ran out of codes",
    ]
    assert len(lines) == 7, result.stderr  # then the summary and the output
    assert [(r["recipient"], r["outcome"]) for r in read_jsonl(failures)] == [
        (f"p{i}", "skipped") for i in range(5, 200)
    ]


def test_an_id_the_file_repeats_is_rendered_once_and_reported_with_both_lines(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 20)
    template = write_template(tmp_path, TEMPLATE)
    rows = [(f"d{i}", f"d{i}@x.org", "1") for i in range(6)]
    rows += [("d1", "again@x.org", "2"), ("d4", "d4@x.org", "1"), ("d1", "third@x.org", "1")]
    people = _people(tmp_path / "dup.csv", rows)
    out = tmp_path / "out.jsonl"

    summary = render(db_url, template, people, "m1", out)

    assert summary.totals.recipients == 6 and summary.totals.rendered == 6
    assert summary.duplicates == [
        Duplicate("d1", 8, 3),
        Duplicate("d4", 9, 6),
        Duplicate("d1", 10, 3),
    ]
    assert summary.as_dict()["duplicates"] == [
        {"recipient": "d1", "line": 8, "first_line": 3},
        {"recipient": "d4", "line": 9, "first_line": 6},
        {"recipient": "d1", "line": 10, "first_line": 3},
    ]
    # The first line of an id is the one rendered.
    sent = {m["recipient"]: m["to"] for m in read_jsonl(out)}
    assert sent["d1"] == "d1@x.org"

    result = Cli(db_url)(
        "render", template, "--recipients", people, "--mailing", "m1", "--out", out
    )
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[:3] == [
        f"recipient d1 appears twice in {people}, on lines 3 and 8: rendered once, from line 3",
        f"recipient d4 appears twice in {people}, on lines 6 and 9: rendered once, from line 6",
        f"recipient d1 appears twice in {people}, on lines 3 and 10: rendered once, from line 3",
    ]


def test_each_shard_reports_the_repeats_of_its_own_ids(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 100)
    template = write_template(tmp_path, TEMPLATE)
    rows = [(f"s{i}", f"s{i}@x.org", "1") for i in range(30)] * 2
    people = _people(tmp_path / "twice.csv", rows)
    reported = []
    for index in (1, 2):
        out = tmp_path / f"o{index}.jsonl"
        summary = render(db_url, template, people, "m1", out, shard=Shard(index, 2))
        reported += [(d.recipient, d.first_line, d.line) for d in summary.duplicates]
    assert sorted(reported) == sorted((f"s{i}", i + 2, i + 32) for i in range(30))


def test_a_failures_file_that_cannot_be_written_is_refused_before_the_render(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    run = Cli(db_url)
    pool_with_codes(engine, "spring", 10)
    template = write_template(tmp_path, TEMPLATE)
    people = _people(tmp_path / "p.csv", [("a", "a@x.org", "1")])
    for target in (tmp_path / "no-such-folder" / "f.csv", tmp_path):
        result = run(
            "render", template, "--recipients", people, "--mailing", "m1",
            "--out", tmp_path / "o.jsonl", "--failures", target,
        )  # fmt: skip
        assert result.exit_code == 2, result.stderr
        assert "--failures" in result.stderr and str(target) in result.stderr
    assert run.json("mailings") == []
