"""The command line for pools and codes, end to end through click's CliRunner.

Every test runs on SQLite and on PostgreSQL (the ``db_url`` fixture). The
runner does not catch exceptions, so a traceback fails the test instead of
passing as "exit status 1".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import Engine

from promomail.pools.issuing.claiming import claim
from promomail.pools.store.db import store_location
from tests.support import cli_helpers
from tests.support.cli_helpers import invoke
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT


class Cli(cli_helpers.Cli):
    """The command line, with shortcuts for showing a pool and listing its codes."""

    def pool(self, pool_id: str) -> dict[str, Any]:
        document: dict[str, Any] = self.json("pool", "show", pool_id)
        return document

    def codes(self, pool_id: str, *options: str) -> list[dict[str, Any]]:
        document: list[dict[str, Any]] = self.json(
            "codes", "list", pool_id, "--limit", "0", *options
        )
        return document


@pytest.fixture
def run(db_url: str) -> Cli:
    return Cli(db_url)


def error_line(result: Result) -> str:
    """The single ``Error:`` line of a refused command, checked for shape."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "a refused command says why"
    assert lines[-1].startswith("Error: "), result.stderr
    assert result.stdout == ""
    return lines[-1]


def refused(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    return error_line(result)


def make_active(run: Cli, name: str, *options: str) -> str:
    document = run.json(
        "pool", "create", name, "--description", "for tests", "--activate", *options
    )
    pool_id: str = document["id"]
    return pool_id


def write_codes(path: Path, codes: Sequence[str]) -> Path:
    path.write_text("".join(f"{code}\n" for code in codes), encoding="utf-8")
    return path


# -- pool create ------------------------------------------------------------


def test_create_uses_a_slug_of_the_name_as_id(run: Cli) -> None:
    result = run("pool", "create", "Spring Sale 30%")
    assert result.exit_code == 0, result.stderr
    assert "spring-sale-30" in result.stdout
    shown = run.pool("spring-sale-30")
    assert shown["id"] == "spring-sale-30"
    assert shown["name"] == "Spring Sale 30%"
    assert shown["status"] == "draft"
    assert shown["mode"] == "single-use"
    assert shown["total"] == 0
    assert shown["imports"] == []


def test_create_with_every_setting(run: Cli) -> None:
    created = run.json(
        "pool",
        "create",
        "Loyalty",
        "--id",
        "loyal-2025",
        "--description",
        "Returning customers",
        "--require-issued",
        "--issued-valid-days",
        "30",
        "--low-stock",
        "10",
        "--notify-url",
        "https://hooks.example.com/stock",
        "--notify-email",
        "ops@example.com",
        "--activate",
    )
    assert created["id"] == "loyal-2025"
    assert created["status"] == "active"
    assert created["require_issued"] is True
    assert created["issued_valid_days"] == 30
    assert created["low_stock"] == 10
    assert created["notify_url"] == "https://hooks.example.com/stock"
    assert created["notify_email"] == "ops@example.com"
    assert run.pool("loyal-2025")["description"] == "Returning customers"


def test_create_multi_use_and_per_customer_modes(run: Cli) -> None:
    assert run.json("pool", "create", "Summer", "--multi-use")["mode"] == "multi-use"
    assert run.json("pool", "create", "Refer", "--per-customer", "3")["per_customer"] == 3


def test_a_second_pool_with_the_same_id_is_refused(run: Cli) -> None:
    assert run("pool", "create", "Spring Sale 30%").exit_code == 0
    line = refused(run("pool", "create", "Spring sale 30"))
    assert "'spring-sale-30'" in line and "already exists" in line
    line = refused(run("pool", "create", "Other", "--id", "spring-sale-30"))
    assert "'spring-sale-30'" in line
    pools = run.json("pool", "list")
    assert [p["name"] for p in pools] == ["Spring Sale 30%"]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--id", "Bad Id!"], "Bad Id!"),
        (["--activate"], "description"),
    ],
)
def test_create_refuses_bad_settings(run: Cli, options: list[str], named: str) -> None:
    line = refused(run("pool", "create", "Winter", *options))
    assert named in line
    assert run.json("pool", "list") == []


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--multi-use", "--require-issued"], "--multi-use"),
        (["--issued-valid-days", "5"], "--issued-valid-days"),
        (["--notify-url", "ftp://example.com"], "--notify-url"),
        (["--notify-email", "not-an-address"], "--notify-email"),
        (["--once-per-customer"], "--once-per-customer applies only to --multi-use pools"),
        (
            ["--once-per-customer", "--per-customer", "2"],
            "--once-per-customer applies only to --multi-use pools",
        ),
    ],
)
def test_create_options_that_make_no_pool_are_a_usage_error(
    run: Cli, options: list[str], named: str
) -> None:
    result = run("pool", "create", "Winter", *options)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "pool create [OPTIONS] NAME" in result.stderr
    assert named in error_line(result)
    assert run.json("pool", "list") == []


def test_create_a_once_per_customer_pool(run: Cli) -> None:
    created = run.json(
        "pool", "create", "Summer", "--multi-use", "--once-per-customer", "--description", "d"
    )
    assert created["once_per_customer"] is True
    assert created["mode"] == "multi-use, once per customer"
    assert "multi-use, once per customer" in run.ok("pool", "show", "summer").stdout
    assert run.json("pool", "create", "Plain", "--multi-use")["once_per_customer"] is False


# -- activate, edit, archive, delete ----------------------------------------


def test_activate_needs_a_description(run: Cli) -> None:
    run("pool", "create", "Spring")
    line = refused(run("pool", "activate", "spring"))
    assert "'spring'" in line and "description" in line
    assert run.pool("spring")["status"] == "draft"

    assert run("pool", "edit", "spring", "--description", "Spring promo").exit_code == 0
    result = run("pool", "activate", "spring")
    assert result.exit_code == 0, result.stderr
    assert "Activated pool spring" in result.stdout
    assert run.pool("spring")["status"] == "active"


def test_edit_changes_settings(run: Cli) -> None:
    run("pool", "create", "Spring", "--notify-url", "https://example.com/hook")
    edited = run.json(
        "pool",
        "edit",
        "spring",
        "--name",
        "Spring 2025",
        "--low-stock",
        "50",
        "--clear",
        "notify-url",
    )
    assert edited["name"] == "Spring 2025"
    assert edited["low_stock"] == 50
    assert edited["notify_url"] is None
    assert edited["id"] == "spring"


def test_mode_flags_change_only_while_draft(run: Cli) -> None:
    run("pool", "create", "Spring", "--description", "promo")
    assert run.json("pool", "edit", "spring", "--multi-use")["mode"] == "multi-use"
    assert run.json("pool", "edit", "spring", "--single-use")["mode"] == "single-use"
    run("pool", "activate", "spring")

    for flags, named in (
        (["--multi-use"], "--multi-use"),
        (["--require-issued"], "--require-issued"),
        (["--per-customer", "2"], "--per-customer"),
    ):
        line = refused(run("pool", "edit", "spring", *flags))
        assert "'spring'" in line and named in line
    shown = run.pool("spring")
    assert (shown["multi_use"], shown["require_issued"], shown["per_customer"]) == (
        False,
        False,
        None,
    )
    # Non-mode settings still change on an active pool.
    assert run.json("pool", "edit", "spring", "--low-stock", "5")["low_stock"] == 5


def test_active_pool_keeps_its_description(run: Cli) -> None:
    make_active(run, "Spring")
    line = refused(run("pool", "edit", "spring", "--clear", "description"))
    assert "description" in line
    assert run.pool("spring")["description"] == "for tests"


def test_edit_without_changes_is_a_usage_error(run: Cli) -> None:
    run("pool", "create", "Spring")
    result = run("pool", "edit", "spring")
    assert result.exit_code == 2
    assert "nothing to change" in result.stderr


def test_archive_stops_uploads_and_generation(run: Cli, tmp_path: Path) -> None:
    make_active(run, "Spring")
    run("codes", "upload", "spring", str(write_codes(tmp_path / "a.txt", ["AAA", "BBB"])))
    archived = run.json("pool", "archive", "spring")
    assert archived["status"] == "archived"
    assert archived["total"] == 2  # history stays

    line = refused(run("codes", "upload", "spring", str(write_codes(tmp_path / "b.txt", ["CCC"]))))
    assert "'spring'" in line and "archived" in line
    line = refused(run("codes", "generate", "spring", "--count", "5"))
    assert "archived" in line
    refused(run("pool", "activate", "spring"))
    assert run.pool("spring")["total"] == 2
    assert len(run.json("imports", "spring")) == 1


def test_delete_a_pool_that_never_issued(run: Cli, tmp_path: Path) -> None:
    run("pool", "create", "Spring")
    run("codes", "upload", "spring", str(write_codes(tmp_path / "a.txt", ["AAA"])))
    result = run("pool", "delete", "spring")
    assert result.exit_code == 0, result.stderr
    assert "Deleted pool spring" in result.stdout
    assert run.json("pool", "list") == []
    refused(run("pool", "show", "spring"))


def test_delete_after_issuing_is_refused(run: Cli, engine: Engine, tmp_path: Path) -> None:
    make_active(run, "Spring")
    run("codes", "upload", "spring", str(write_codes(tmp_path / "a.txt", ["AAA", "BBB"])))
    issued = claim(engine, "spring", "mailing-1", ["alice"])
    assert set(issued) == {"alice"}

    line = refused(run("pool", "delete", "spring"))
    assert "'spring'" in line and "archive" in line
    shown = run.pool("spring")
    assert (shown["total"], shown["issued"], shown["available"]) == (2, 1, 1)


@pytest.mark.parametrize(
    "command",
    [
        ["pool", "activate", "nope"],
        ["pool", "edit", "nope", "--name", "x"],
        ["pool", "archive", "nope"],
        ["pool", "delete", "nope"],
        ["pool", "show", "nope"],
        ["codes", "list", "nope"],
        ["codes", "void", "nope", "--batch", "1"],
        ["codes", "generate", "nope", "--count", "1"],
        ["imports", "nope"],
    ],
)
def test_unknown_pool_is_named(run: Cli, command: list[str]) -> None:
    line = refused(run(*command))
    assert line == f"Error: pool 'nope' does not exist in the store {store_location(run.url)}"


@pytest.mark.parametrize(
    "command",
    [
        ["pool", "activate", "sprng"],
        ["pool", "edit", "sprng", "--name", "x"],
        ["pool", "show", "sprng"],
        ["codes", "list", "sprng"],
        ["codes", "generate", "sprng", "--count", "1"],
        ["imports", "sprng"],
        ["segment", "--issued-from", "sprng"],
        ["export", "issuances", "--pool", "sprng", "--out", "never.csv"],
    ],
)
def test_an_unknown_pool_close_to_one_suggests_it(run: Cli, command: list[str]) -> None:
    make_active(run, "Spring")
    line = refused(run(*command))
    where = store_location(run.url)
    assert line.endswith(
        f"pool 'sprng' does not exist in the store {where} (did you mean 'spring'?)"
    )


def test_did_you_mean_is_one_line_of_the_console_script(run: Cli) -> None:
    make_active(run, "Spring")
    shown = subprocess.run(
        cli_helpers.promomail_command(run.url, "pool", "show", "Sprng"),
        capture_output=True,
        text=True,
    )
    assert (shown.returncode, shown.stdout) == (1, "")
    assert shown.stderr == (
        f"Error: pool 'Sprng' does not exist in the store {store_location(run.url)}"
        " (did you mean 'spring'?)\n"
    )


def test_unknown_pool_with_json_prints_nothing_on_stdout(run: Cli) -> None:
    result = run("pool", "show", "nope", "--json")
    assert result.exit_code == 1
    assert result.stdout == ""


# -- list and show ------------------------------------------------------------


def test_list_shows_counts_per_pool(run: Cli, tmp_path: Path) -> None:
    assert "No pools yet" in run("pool", "list").stdout
    make_active(run, "Spring Sale")
    run("pool", "create", "Summer", "--multi-use")
    run("codes", "upload", "spring-sale", str(write_codes(tmp_path / "a.txt", ["A1", "A2", "A3"])))

    pools = {p["id"]: p for p in run.json("pool", "list")}
    assert set(pools) == {"spring-sale", "summer"}
    assert pools["spring-sale"]["total"] == 3
    assert pools["spring-sale"]["available"] == 3
    assert pools["summer"]["mode"] == "multi-use"
    assert pools["summer"]["total"] == 0

    lines = run("pool", "list").stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "name",
        "status",
        "mode",
        "total",
        "available",
        "pending",
        "reserved",
        "issued",
        "expired",
        "void",
        "redeemed",
        "redemptions",
        "held",
    ]
    spring = next(line for line in lines if line.startswith("spring-sale"))
    assert spring.split()[-10:] == ["3", "3", "0", "0", "0", "0", "0", "0", "0", "0"]
    # Aligned: every row's "total" column ends where the header's does.
    end = lines[0].index("total") + len("total")
    assert all(line[end - 1] != " " for line in lines[1:])


def test_list_columns_add_up_on_screen(run: Cli, tmp_path: Path) -> None:
    make_active(run, "Spring")
    csv_codes = "code,issue_start,available_till\nLATER-1,2999-01-01,\nGONE-1,,2000-01-01\n"
    run.ok("codes", "upload", "spring", "-", "--format", "csv", input=csv_codes)
    run.ok("codes", "upload", "spring", str(write_codes(tmp_path / "a.txt", ["A1", "A2"])))
    run.ok("codes", "upload", "spring", str(write_codes(tmp_path / "b.txt", ["B1", "B2", "B3"])))
    run.ok("codes", "void", "spring", "--batch", "3")
    run.ok("redeem", "A1", "--order", "o-1")

    # The console script, as a person reads it.
    listed = subprocess.run(
        [*cli_helpers.promomail_command(run.url, "pool", "list")], capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    header, row = (line.split() for line in listed.stdout.splitlines())
    shown = dict(zip(header[4:], map(int, row[-len(header[4:]) :]), strict=True))
    parts = ("available", "pending", "reserved", "issued", "expired", "void")
    assert {k: shown[k] for k in ("total", *parts)} == {
        "total": 7,
        "available": 1,
        "pending": 1,
        "reserved": 0,
        "issued": 1,
        "expired": 1,
        "void": 3,
    }
    assert shown["total"] == sum(shown[part] for part in parts)
    assert (shown["redeemed"], shown["redemptions"]) == (1, 1)
    document = run.json("pool", "list")[0]
    assert {k: document[k] for k in shown} == shown


def test_show_has_settings_counts_and_history(run: Cli, tmp_path: Path) -> None:
    make_active(run, "Spring", "--low-stock", "7")
    run("codes", "upload", "spring", str(write_codes(tmp_path / "first.txt", ["A1", "A2"])))
    shown = run.pool("spring")
    assert shown["low_stock"] == 7
    assert [(i["file"], i["accepted"]) for i in shown["imports"]] == [
        (str(tmp_path / "first.txt"), 2)
    ]
    text = run("pool", "show", "spring").stdout
    assert "Pool spring: Spring" in text
    assert re.search(r"low stock below\s+7", text)
    assert re.search(r"available\s+2", text)
    assert "first.txt" in text


def test_show_prints_every_setting_and_count(run: Cli) -> None:
    run.ok(
        "pool", "create", "Fall", "--description", "autumn", "--require-issued",
        "--issued-valid-days", "30", "--per-customer", "2", "--low-stock", "5",
        "--notify-email", "ops@example.com",
    )  # fmt: skip
    text = run.ok("pool", "show", "fall").stdout
    fields = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1)
        for line in text.splitlines()
        if line.startswith("  ")
    )
    assert {
        key: fields.get(key)
        for key in (
            "description",
            "multi use",
            "require issued",
            "valid days after issue",
            "per customer",
            "low stock below",
            "notify url",
            "notify email",
        )
    } == {
        "description": "autumn",
        "multi use": "no",
        "require issued": "yes",
        "valid days after issue": "30",
        "per customer": "2",
        "low stock below": "5",
        "notify url": "-",
        "notify email": "ops@example.com",
    }
    document = run.pool("fall")
    counts = ("total", "available", "pending", "reserved", "issued", "expired", "void")
    assert all(fields[name] == str(document[name]) for name in (*counts, "redeemed"))
    assert "Counts (total = available + pending + reserved + issued + expired + void)" in text


# -- codes: upload, generate, list, void, imports ------------------------------


def test_upload_reports_and_summarises(run: Cli, tmp_path: Path) -> None:
    make_active(run, "Spring")
    path = write_codes(tmp_path / "codes.txt", ["AAA", "BBB", "CCC", "AAA"])
    result = run("codes", "upload", "spring", str(path))
    assert result.exit_code == 0, result.stderr
    assert re.search(r"accepted", result.stdout)
    assert "3 codes, 3 available" in result.stdout
    summary = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"Uploaded 3 codes \(1 duplicate, 0 rejected\) in [\d.]+ s — [\d,]+ codes/s", summary
    ), summary


def test_upload_json_is_one_document_with_the_report(run: Cli, tmp_path: Path) -> None:
    make_active(run, "Spring")
    result = run(
        "codes", "upload", "spring", str(write_codes(tmp_path / "a.txt", ["A", "B"])), "--json"
    )
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert {"batch", "accepted", "duplicates", "rejected", "total", "available"} <= set(report)
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (2, 0, [])
    assert (report["total"], report["available"]) == (2, 2)
    assert "Uploaded 2 codes" in result.stderr  # the summary stays off stdout


def test_upload_several_files_in_one_document(run: Cli, tmp_path: Path) -> None:
    make_active(run, "Spring")
    first = write_codes(tmp_path / "a.txt", ["A", "B"])
    second = tmp_path / "b.csv"
    second.write_text("code,available_till\nC,2099-12-31\nA,2099-12-31\n", encoding="utf-8")
    document = run.json("codes", "upload", "spring", str(first), str(second))
    assert [(u["format"], u["accepted"], u["duplicates"]) for u in document["uploads"]] == [
        ("txt", 2, 0),
        ("csv", 1, 1),
    ]
    assert (document["total"], document["available"]) == (3, 3)
    assert len({u["batch"] for u in document["uploads"]}) == 2


def test_generate_codes(run: Cli) -> None:
    make_active(run, "Spring")
    result = run(
        "codes",
        "generate",
        "spring",
        "--count",
        "50",
        "--length",
        "8",
        "--prefix",
        "SP-",
        "--check-digit",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["generated"], report["total"], report["available"]) == (50, 50, 50)
    assert "Generated 50 codes" in result.stderr
    codes = [c["code"] for c in run.codes("spring")]
    assert len(set(codes)) == 50
    assert all(c.startswith("SP-") and len(c) == 3 + 8 + 1 for c in codes)
    assert all(not set(c[3:]) & set("0O1IL") for c in codes)


def test_generate_with_alphabet(run: Cli) -> None:
    make_active(run, "Spring")
    run.json("codes", "generate", "spring", "--count", "10", "--length", "6", "--alphabet", "XYZ")
    codes = [c["code"] for c in run.codes("spring")]
    assert len(codes) == 10 and {len(c) for c in codes} == {6}
    assert all(set(c) <= set("XYZ") for c in codes)


def test_generate_refuses_a_count_that_does_not_fit(run: Cli) -> None:
    make_active(run, "Spring")
    line = refused(
        run("codes", "generate", "spring", "--count", "3", "--length", "2", "--alphabet", "AB")
    )
    assert "'spring'" in line
    assert run.pool("spring")["total"] == 0
    line = refused(run("codes", "generate", "spring", "--count", "5", "--alphabet", "AAB"))
    assert "--alphabet" in line


def test_list_codes_by_state(run: Cli, engine: Engine, tmp_path: Path) -> None:
    make_active(run, "Spring")
    run("codes", "upload", "spring", str(write_codes(tmp_path / "a.txt", ["A1", "A2", "A3"])))
    issued = claim(engine, "spring", "welcome", ["alice"])

    everything = run.codes("spring")
    assert len(everything) == 3
    [mine] = run.codes("spring", "--state", "issued")
    assert mine["code"] == issued["alice"]
    assert (mine["customer"], mine["mailing"], mine["state"]) == ("alice", "welcome", "issued")
    assert mine["issued_at"] is not None
    assert {c["code"] for c in run.codes("spring", "--state", "available")} == {
        "A1",
        "A2",
        "A3",
    } - {issued["alice"]}
    assert run.codes("spring", "--state", "void") == []

    limited = run.json("codes", "list", "spring", "--limit", "2")
    assert len(limited) == 2
    text = run("codes", "list", "spring", "--state", "issued")
    assert "alice" in text.stdout and "welcome" in text.stdout
    assert text.stdout.splitlines()[0].split()[:3] == ["code", "state", "customer"]


def test_void_keeps_issued_codes(run: Cli, engine: Engine, tmp_path: Path) -> None:
    make_active(run, "Spring")
    run("codes", "upload", "spring", str(write_codes(tmp_path / "good.txt", ["G1", "G2"])))
    wrong = run.json(
        "codes", "upload", "spring", str(write_codes(tmp_path / "bad.txt", ["W1", "W2", "W3"]))
    )
    claim(engine, "spring", "m1", ["alice", "bob", "carol"])  # G1, G2 and one W code

    report = run.json("codes", "void", "spring", "--batch", str(wrong["batch"]))
    assert report == {
        "pool": "spring",
        "batch": wrong["batch"],
        "voided": 2,
        "kept_issued": 1,
        "low_stock": [],
    }
    shown = run.pool("spring")
    assert (shown["void"], shown["issued"], shown["available"], shown["total"]) == (2, 3, 0, 5)
    assert [i["voided_at"] is not None for i in shown["imports"]] == [False, True]

    result = run("codes", "void", "spring", "--batch", "999")
    assert "batch 999" in refused(result)


def test_void_human_output(run: Cli, tmp_path: Path) -> None:
    make_active(run, "Spring")
    batch = run.json("codes", "upload", "spring", str(write_codes(tmp_path / "a.txt", ["A"])))[
        "batch"
    ]
    result = run("codes", "void", "spring", "--batch", str(batch))
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Voided 1 code of batch {batch} in pool spring;")
    assert "kept 0 already issued codes" in result.stdout


def test_imports_history(run: Cli, tmp_path: Path) -> None:
    make_active(run, "Spring")
    assert run.json("imports", "spring") == []
    assert "(no imports)" in run("imports", "spring").stdout
    run("codes", "upload", "spring", str(write_codes(tmp_path / "a.txt", ["A", "B", "A"])))
    run("codes", "generate", "spring", "--count", "4")
    history = run.json("imports", "spring")
    assert [(h["format"], h["accepted"], h["duplicates"], h["rejected"]) for h in history] == [
        ("txt", 2, 1, 0),
        ("generated", 4, 0, 0),
    ]
    assert all(h["created_at"] for h in history)
    header = run("imports", "spring").stdout.splitlines()[0].split()
    assert header[:6] == ["batch", "file", "format", "accepted", "duplicates", "rejected"]


# -- conventions: JSON, exit statuses, database, help ---------------------------


def test_every_reporting_command_prints_one_json_document(run: Cli, tmp_path: Path) -> None:
    path = str(write_codes(tmp_path / "a.txt", ["A", "B"]))
    commands = [
        ["pool", "create", "Spring", "--description", "d"],
        ["pool", "edit", "spring", "--low-stock", "1"],
        ["pool", "activate", "spring"],
        ["codes", "upload", "spring", path],
        ["codes", "generate", "spring", "--count", "3"],
        ["codes", "list", "spring"],
        ["codes", "void", "spring", "--batch", "1"],
        ["imports", "spring"],
        ["pool", "show", "spring"],
        ["pool", "list"],
        ["pool", "archive", "spring"],
        ["pool", "create", "Other"],
        ["pool", "delete", "other"],
        ["db", "current"],
        ["db", "upgrade"],
    ]
    for command in commands:
        result = run(*command, "--json")
        assert result.exit_code == 0, (command, result.stderr)
        json.loads(result.stdout)  # exactly one document, or this raises


@pytest.mark.parametrize(
    "command",
    [
        ["no-such-command"],
        ["pool", "create"],
        ["pool", "create", "X", "--low-stock", "many"],
        ["codes", "generate", "spring"],
        ["codes", "list", "spring", "--state", "lost"],
        ["codes", "list", "spring", "--limit", "-1"],
        ["codes", "void", "spring"],
        ["codes", "upload", "spring"],
        ["codes", "upload", "spring", "a.txt", "--whitespace", "trim"],
        ["codes", "upload", "spring", "-", "-"],
    ],
)
def test_usage_errors_exit_2(run: Cli, command: list[str]) -> None:
    result = run(*command)
    assert result.exit_code == 2, result.stderr
    assert "Error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_current_and_upgrade(run: Cli) -> None:
    before = run.json("db", "current")
    assert before["current"] is None and before["up_to_date"] is False
    upgraded = run.json("db", "upgrade")
    assert upgraded["changed"] is True and upgraded["to"] == before["head"]
    after = run.json("db", "current")
    assert after["current"] == after["head"] and after["up_to_date"] is True
    assert "up to date" in run("db", "current").stdout
    assert run.json("db", "upgrade")["changed"] is False


def test_any_command_migrates_a_new_database(run: Cli) -> None:
    assert run.json("pool", "list") == []
    assert run.json("db", "current")["up_to_date"] is True


def test_database_from_the_environment(db_url: str) -> None:
    created = invoke(["pool", "create", "Spring"], env={"PROMOMAIL_DB": db_url})
    assert created.exit_code == 0, created.stderr
    listed = Cli(db_url).json("pool", "list")
    assert [p["id"] for p in listed] == ["spring"]


def test_help_never_touches_the_database(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    for args in (["--help"], ["pool", "--help"], ["codes", "upload", "--help"]):
        result = invoke(["--db", missing, *args])
        assert result.exit_code == 0, result.stderr
        assert "Usage:" in result.stdout
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://localhost/x", "mysql"),
        ("sqlite:///{tmp}/no/such/folder/x.db", "no store at "),
        ("postgresql://nobody@127.0.0.1:1/none", "127.0.0.1"),
        ("postgresql+nosuch://u:secret@localhost/x", "postgresql.nosuch"),
        ("not a url", "'not a url'"),
    ],
)
def test_unusable_database_is_one_error_line(tmp_path: Path, url: str, named: str) -> None:
    result = invoke(["--db", url.format(tmp=tmp_path), "pool", "list"])
    assert result.exit_code == 1
    line = error_line(result)
    assert named in line
    assert "secret" not in line


def test_without_a_terminal_an_upload_shows_no_progress(run: Cli, tmp_path: Path) -> None:
    # On a terminal: tests/cli/test_cli_progress.py, with a real one.
    make_active(run, "Spring")
    path = str(write_codes(tmp_path / "a.txt", [f"C{i:05d}" for i in range(2000)]))
    quiet = run("codes", "upload", "spring", path, "--json")
    assert quiet.exit_code == 0, quiet.stderr
    assert "\r" not in quiet.stderr and "Uploading" not in quiet.stderr
    assert quiet.stderr.rstrip().splitlines()[-1].endswith("codes/s")
    assert json.loads(quiet.stdout)["accepted"] == 2000


def test_python_cli_py_runs(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "cli.py", "--db", db_url, "pool", "list", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
