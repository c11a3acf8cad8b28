"""Bad input to ``codes upload`` (and friends): a clear error, and nothing stored.

Every refusal must print one ``Error:`` line naming the file and, where
there is one, the line; exit with status 1; and leave the pool exactly as it
was, which each test checks through the pool's counts, its codes and its
import history. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pytest
from click.testing import Result
from sqlalchemy import Engine

from promomail import cli as cli_module
from promomail.commands.errors import cli_flag
from promomail.pools.errors import InvalidSetting
from promomail.pools.store.db import StoreConfig, open_engine, store_location
from promomail.templating.mailing.options import parse_shard, parse_workers
from promomail.templating.mailing.recipients import Shard
from tests.support import cli_helpers
from tests.support.cli_helpers import invoke
from tests.support.render_helpers import full_snapshot

POOL = "spring"


class Cli(cli_helpers.Cli):
    """The command line, with shortcuts for the pool every test uploads to."""

    def upload(self, *args: str, input: bytes | str | None = None) -> Result:
        return self("codes", "upload", POOL, *args, input=input)

    def stored_codes(self) -> list[str]:
        return [c["code"] for c in self.json("codes", "list", POOL, "--limit", "0")]

    def assert_nothing_stored(self) -> None:
        shown = self.json("pool", "show", POOL)
        assert (shown["total"], shown["available"]) == (0, 0)
        assert shown["imports"] == []
        assert self.stored_codes() == []


@pytest.fixture
def run(db_url: str) -> Cli:
    runner = Cli(db_url)
    created = runner("pool", "create", "Spring", "--description", "tests", "--activate")
    assert created.exit_code == 0, created.stderr
    return runner


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def refusal(result: Result) -> str:
    """The ``Error:`` line of a refused upload, after checking its shape."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    return last


@contextmanager
def engine_for(url: str) -> Iterator[Engine]:
    engine = open_engine(StoreConfig(url))
    try:
        yield engine
    finally:
        engine.dispose()


def problem_lines(result: Result) -> list[str]:
    """The per-line problems listed before the error line."""
    return result.stderr.strip().splitlines()[:-1]


# -- a refused upload: the Error line names file, line and reason; nothing stored --

_NUL_AT_LINE_7 = b"".join(
    (b"CO\x00DE" if i == 6 else f"CODE{i:03d}".encode()) + b"\n" for i in range(40)
)


@pytest.mark.parametrize(
    ("name", "content", "named"),
    [
        # the file as a whole is unusable
        ("empty.txt", b"", ["{path}", "empty", "nothing was stored"]),
        ("empty.csv", b"", ["{path}", "empty"]),
        ("logo.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, ["{path}", "binary"]),
        ("codes.csv", b"name,value\nAAA,1\nBBB,2\n", ["{path}", "line 1", "code column"]),
        # one invalid line: all or nothing
        ("codes.txt", _NUL_AT_LINE_7, ["{path}, line 7", "control character"]),
        ("codes.txt", b"AAA\nBBB\n\xff\xfeCC\nDDD\n", ["{path}, line 3", "UTF-8"]),
        ("codes.csv", "code\nAAA\nCAFÉ\n".encode("latin-1"), ["{path}", "line 3", "UTF-8"]),
        ("codes.txt", b"AAA\n" + b"X" * 100_000 + b"\nBBB\n", ["{path}, line 2"]),
        ("codes.txt", b"AAA\n" + b"Y" * 65 + b"\n", ["{path}, line 2", "65 characters"]),
        ("codes.txt", b"AAA\n\nBBB\n", ["{path}, line 2", "empty line"]),
        (
            "codes.csv",
            b"code,available_till\nAAA,2099-12-31\nBBB,31/12/2099\nCCC,2099-12-31T12:00:00\n",
            ["{path}, line 3", "date"],
        ),
    ],
    ids=[
        "empty file",
        "empty csv",
        "binary file",
        "csv without a code column",
        "nul byte",
        "invalid utf-8",
        "latin-1 csv",
        "a 100 kB line",
        "a code over 64 characters",
        "empty line in the middle",
        "csv with a bad date",
    ],
)
def test_a_refused_upload_names_the_file_and_line(
    run: Cli, tmp_path: Path, name: str, content: bytes, named: list[str]
) -> None:
    path = write(tmp_path / name, content)
    line = refusal(run.upload(path))
    for fragment in named:
        assert fragment.format(path=path) in line, (fragment, line)
    run.assert_nothing_stored()


def test_leading_and_trailing_whitespace_rejected_by_default(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "codes.txt", b" AAA\nBBB\nCCC \nD D\n")
    result = run.upload(path)
    line = refusal(result)
    assert f"{path}, line 1" in line and "whitespace" in line
    problems = problem_lines(result)
    assert problems == [
        f"{path}, line 1: leading or trailing whitespace",
        f"{path}, line 3: leading or trailing whitespace",
    ]
    # The way out is named as this command spells it.
    assert line == (
        f"Error: {path}, line 1: leading or trailing whitespace (and 1 more problem); "
        "nothing was stored (--whitespace strip (trims) or keep (stores it as it is) accepts "
        "whitespace at either end of a code; --skip-invalid stores the valid lines and reports "
        "the rest)"
    )
    run.assert_nothing_stored()


def test_a_refusal_without_whitespace_problems_names_only_skip_invalid(
    run: Cli, tmp_path: Path
) -> None:
    path = write(tmp_path / "codes.txt", b"AAA\n\nBBB\n")
    # The console script: the whole of stderr is what a person reads.
    upload = subprocess.run(
        cli_helpers.promomail_command(run.url, "codes", "upload", POOL, path),
        capture_output=True,
        text=True,
    )
    assert upload.returncode == 1
    assert upload.stderr.splitlines() == [
        f"{path}, line 2: empty line",
        f"Error: {path}, line 2: empty line; nothing was stored "
        "(--skip-invalid stores the valid lines and reports the rest)",
    ]
    run.assert_nothing_stored()


@pytest.mark.parametrize(
    ("whitespace", "stored"),
    [("strip", ["AAA", "BBB", "CCC", "D D"]), ("keep", [" AAA", "BBB", "CCC ", "D D"])],
)
def test_whitespace_strip_or_keep(
    run: Cli, tmp_path: Path, whitespace: str, stored: list[str]
) -> None:
    path = write(tmp_path / "codes.txt", b" AAA\nBBB\nCCC \nD D\n")
    report = run.json("codes", "upload", POOL, path, "--whitespace", whitespace)
    assert report["accepted"] == 4
    assert sorted(run.stored_codes()) == stored


def test_every_problem_is_listed_with_its_line(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "codes.txt", b"AAA\n BBB\n\nCCC\n\xff\n" + b"Z" * 70 + b"\n")
    result = run.upload(path)
    refusal(result)
    listed = problem_lines(result)
    assert [entry.split(":")[0] for entry in listed] == [f"{path}, line {n}" for n in (2, 3, 5, 6)]
    assert "(and 3 more problems)" in result.stderr
    assert "--whitespace strip" in result.stderr
    run.assert_nothing_stored()


def test_rejected_upload_json_report(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "codes.txt", b"AAA\n BBB\nCCC\n\n")
    result = run.upload(path, "--json")
    line = refusal(result)
    assert path in line
    assert problem_lines(result) == []  # the problems are in the JSON report
    report = json.loads(result.stdout)
    assert report["rejected"] == [
        {"line": 2, "reason": "leading or trailing whitespace"},
        {"line": 4, "reason": "empty line"},
    ]
    assert "--whitespace strip (trims) or keep" in report["error"]
    assert report["error"] == line.removeprefix("Error: ")
    assert (report["batch"], report["accepted"], report["total"], report["available"]) == (
        None,
        0,
        0,
        0,
    )
    run.assert_nothing_stored()


def test_one_bad_file_stores_none_of_the_files(run: Cli, tmp_path: Path) -> None:
    good = write(tmp_path / "good.txt", b"AAA\nBBB\n")
    bad = write(tmp_path / "bad.txt", b"CCC\nDDD \n")
    result = run.upload(good, bad)
    line = refusal(result)
    assert f"{bad}, line 2" in line
    run.assert_nothing_stored()

    result = run.upload(good, bad, "--json")
    refusal(result)
    document = json.loads(result.stdout)
    assert [u["file"] for u in document["uploads"]] == [bad]
    run.assert_nothing_stored()


def test_skip_invalid_stores_the_valid_lines(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "mixed.txt", b"AAA\n BBB\nCCC\n\xff\nAAA\nDDD\n")
    result = run.upload(path, "--skip-invalid", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["accepted"], report["duplicates"]) == (3, 1)
    assert [p["line"] for p in report["rejected"]] == [2, 4]
    assert (report["total"], report["available"]) == (3, 3)
    assert sorted(run.stored_codes()) == ["AAA", "CCC", "DDD"]


def test_skip_invalid_human_output_lists_the_skipped_lines(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "mixed.txt", b"AAA\n BBB\nCCC\n")
    result = run.upload(path, "--skip-invalid")
    assert result.exit_code == 0, result.stderr
    assert f"{path}, line 2: leading or trailing whitespace" in result.stderr
    assert "The pool now holds 2 codes, 2 available." in result.stdout
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("Uploaded 2 codes (0 duplicates, 1 rejected)")
    )


# -- accepted inputs ------------------------------------------------------------------


def test_utf8_bom_is_not_part_of_the_code(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "codes.txt", "\ufeffAAA\nBBB\n".encode())
    assert run.json("codes", "upload", POOL, path)["accepted"] == 2
    assert sorted(run.stored_codes()) == ["AAA", "BBB"]


def test_utf8_bom_in_a_csv(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "codes.csv", "\ufeffCoupon Code\nAAA\nBBB\n".encode())
    assert run.json("codes", "upload", POOL, path)["accepted"] == 2
    assert sorted(run.stored_codes()) == ["AAA", "BBB"]


def test_crlf_line_ends(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "codes.txt", b"AAA\r\nBBB\r\nCCC\r\n")
    assert run.json("codes", "upload", POOL, path)["accepted"] == 3
    assert sorted(run.stored_codes()) == ["AAA", "BBB", "CCC"]


def test_csv_with_windows(run: Cli, tmp_path: Path) -> None:
    path = write(
        tmp_path / "codes.csv",
        b"Code,issue-start,available_till\r\nAAA,2020-01-01,2099-12-31\r\nBBB,,\r\n",
    )
    report = run.json("codes", "upload", POOL, path)
    assert (report["format"], report["accepted"], report["available"]) == ("csv", 2, 2)
    listed = {c["code"]: c for c in run.json("codes", "list", POOL)}
    assert listed["AAA"]["available_till"] is not None
    assert listed["BBB"]["available_till"] is None


def test_format_option_overrides_the_extension(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "export.dat", b"code\nAAA\n")
    report = run.json("codes", "upload", POOL, path, "--format", "csv")
    assert report["format"] == "csv"
    assert run.stored_codes() == ["AAA"]


def test_duplicates_are_counted_not_errors(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "codes.txt", b"AAA\nBBB\nAAA\nCCC\nBBB\n")
    result = run.upload(path, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (3, 2, [])
    assert "2 duplicates" in result.stderr


def test_the_same_file_twice_adds_nothing(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "codes.txt", b"AAA\nBBB\nCCC\n")
    first = run.json("codes", "upload", POOL, path)
    second = run.json("codes", "upload", POOL, path)
    assert (first["accepted"], first["duplicates"]) == (3, 0)
    assert (second["accepted"], second["duplicates"]) == (0, 3)
    assert second["total"] == 3
    assert sorted(run.stored_codes()) == ["AAA", "BBB", "CCC"]


def test_stdin_with_dash(run: Cli) -> None:
    result = run.upload("-", "--json", input=b"AAA\r\nBBB\nAAA\n")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["file"], report["format"]) == ("<stdin>", "txt")
    assert (report["accepted"], report["duplicates"]) == (2, 1)
    assert sorted(run.stored_codes()) == ["AAA", "BBB"]


def test_stdin_with_an_invalid_line(run: Cli) -> None:
    line = refusal(run.upload("-", input=b"AAA\nBB B \n"))
    assert "<stdin>, line 2" in line
    run.assert_nothing_stored()


def test_stdin_as_csv(run: Cli) -> None:
    report = run.json("codes", "upload", POOL, "-", "--format", "csv", input=b"code\nAAA\n")
    assert report["format"] == "csv"
    assert run.stored_codes() == ["AAA"]


# -- the pool is at fault -----------------------------------------------------------------


def test_unknown_pool(run: Cli, tmp_path: Path) -> None:
    path = write(tmp_path / "codes.txt", b"AAA\n")
    line = refusal(run("codes", "upload", "nope", path))
    assert line == f"Error: pool 'nope' does not exist in the store {store_location(run.url)}"
    run.assert_nothing_stored()


def test_archived_pool(run: Cli, tmp_path: Path) -> None:
    assert run("pool", "archive", POOL).exit_code == 0
    line = refusal(run.upload(write(tmp_path / "codes.txt", b"AAA\n")))
    assert f"'{POOL}'" in line and "archived" in line
    run.assert_nothing_stored()


def test_a_second_pool_with_the_same_id(run: Cli) -> None:
    line = refusal(run("pool", "create", "Spring"))
    assert line == f"Error: pool '{POOL}' already exists"
    assert len(run.json("pool", "list")) == 1


def test_missing_file_is_a_usage_error(run: Cli, tmp_path: Path) -> None:
    result = run.upload(str(tmp_path / "nowhere.txt"))
    assert result.exit_code == 2
    assert "nowhere.txt" in result.stderr
    run.assert_nothing_stored()


# -- empty values: no option or argument takes one -------------------------------


def _subcommand(group: click.Group, name: str) -> click.Command:
    """As click finds it: a command of the root group is imported here if not yet."""
    command = group.get_command(click.Context(group), name)
    assert command is not None, name
    return command


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in group.list_commands(click.Context(group)):
        yield (*path, name)
        command = _subcommand(group, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def _command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli_module.cli
    for name in path:
        assert isinstance(command, click.Group)
        command = _subcommand(command, name)
    return command


def _empty_value_cases() -> Iterator[tuple[tuple[str, ...], str, list[str]]]:
    """(command path, parameter shown, argv giving it "") for every value of every command."""
    for option in cli_module.cli.params:
        if isinstance(option, click.Option) and cli_module.takes_value(option):
            yield (), option.opts[0], [option.opts[0], ""]
    for path in _commands(cli_module.cli):
        command = _command_at(path)
        arguments_before: list[str] = []
        for param in command.params:
            if not cli_module.takes_value(param):
                continue
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    yield path, name, [*path, name, ""]
            else:
                yield path, param.human_readable_name, [*path, *arguments_before, ""]
                arguments_before.append("x")


EMPTY_VALUE_CASES = list(_empty_value_cases())


def test_the_empty_value_cases_cover_every_command() -> None:
    """Guards the test below against enumerating too little."""
    covered = {path for path, _, _ in EMPTY_VALUE_CASES}
    assert {("render",), ("pool", "edit"), ("codes", "upload"), ("segment",)} <= covered
    # Loaded on demand or not, every command of the table is walked.
    assert set(cli_module.COMMANDS) <= {path[0] for path in _commands(cli_module.cli)}
    shown = {name for _, name, _ in EMPTY_VALUE_CASES}
    assert {"--db", "--shard", "--workers", "--mailing", "--out", "--chunk-size"} <= shown
    # Every command that reads a value is in the list.
    for path in _commands(cli_module.cli):
        if any(cli_module.takes_value(p) for p in _command_at(path).params):
            assert path in covered, path


@pytest.mark.parametrize("blank", ["", "  ", "\t"], ids=["empty", "spaces", "tab"])
@pytest.mark.parametrize(
    ("path", "name", "argv"), EMPTY_VALUE_CASES, ids=[" ".join(c[2]) for c in EMPTY_VALUE_CASES]
)
def test_every_value_refuses_an_empty_one(
    tmp_path: Path, path: tuple[str, ...], name: str, argv: list[str], blank: str
) -> None:
    """``--shard "$UNSET"`` is a usage error naming the option, never "every recipient"."""
    store = tmp_path / "store.db"
    argv = [blank if a == "" else a for a in argv]
    result = invoke(["--db", f"sqlite:///{store}", *argv])

    assert result.exit_code == 2, (argv, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: Invalid value for '{name}'"), last
    assert "an empty value is not allowed" in last, last
    assert not store.exists()  # refused before the store was opened


def test_an_empty_store_url_in_the_environment_is_refused(tmp_path: Path) -> None:
    result = invoke(["pool", "list"], env={"PROMOMAIL_DB": "   "})
    assert result.exit_code == 2
    assert "Invalid value for '--db'" in result.stderr


def test_a_command_added_later_refuses_empty_values_too(tmp_path: Path) -> None:
    """The rule lives in the group: a new command cannot forget it."""

    @click.command("later")
    @click.option("--name")
    @click.argument("thing")
    def later(name: str | None, thing: str) -> None:
        click.echo(f"{name}:{thing}")

    @click.command("later-still")
    @click.option("--name")
    def later_still(name: str | None) -> None:
        click.echo(f"{name}")

    plain = click.Group("plain", commands=[later])
    cli_module.cli.add_command(plain)
    plain.add_command(later_still)  # to a group of click's own class, afterwards
    try:
        ok = invoke(["plain", "later", "--name", "n", "t"])
        assert (ok.exit_code, ok.stdout) == (0, "n:t\n")
        for argv, name in (
            (["later", "--name", "", "t"], "--name"),
            (["later", " "], "THING"),
            (["later-still", "--name", ""], "--name"),
        ):
            result = invoke(["plain", *argv])
            assert result.exit_code == 2
            assert f"Invalid value for '{name}'" in result.stderr
    finally:
        cli_module.cli.commands.pop("plain")


def test_a_blank_shard_renders_nothing_and_changes_nothing(
    run: Cli, db_url: str, tmp_path: Path
) -> None:
    """Before, ``--shard ""`` rendered every recipient: N machines, N mailings."""
    template = tmp_path / "t.j2"
    template.write_text("{{ client.promocode('spring') }}", encoding="utf-8")
    recipients = write(tmp_path / "r.csv", b"id\na\nb\n")
    assert run("codes", "generate", POOL, "--count", "5").exit_code == 0
    with engine_for(db_url) as engine:
        before = full_snapshot(engine)
        result = run(
            "render", str(template), "--recipients", recipients, "--mailing", "m",
            "--out", str(tmp_path / "out.jsonl"), "--shard", "",
        )  # fmt: skip
        assert result.exit_code == 2
        assert "Invalid value for '--shard'" in result.stderr
        assert full_snapshot(engine) == before
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--shard", "0/2"),
        ("--shard", "3/2"),
        ("--shard", "1/0"),
        ("--shard", "x/2"),
        ("--shard", "1"),
        ("--shard", "1/2/3"),
        ("--shard", " 1/2"),
        ("--shard", "+1/2"),
        ("--shard", "1_0/20"),
        ("--shard", "\u0661/\u0662"),  # Arabic-Indic digits: int() takes them
        ("--shard", "-1/2"),
        ("--shard", "1/10001"),
        ("--workers", "0"),
        ("--workers", "65"),
        ("--workers", "1.5"),
        ("--workers", "+2"),
        ("--workers", "two"),
        ("--wait", "-1"),
        ("--wait", "nan"),
        ("--wait", "inf"),
        ("--wait", "86401"),
        ("--chunk-size", "0"),
        ("--lease-seconds", "0"),
    ],
)
def test_render_settings_are_parsed_strictly(tmp_path: Path, option: str, value: str) -> None:
    template = tmp_path / "t.j2"
    template.write_text("hi", encoding="utf-8")
    recipients = write(tmp_path / "r.csv", b"id\na\n")
    store = tmp_path / "store.db"
    argv = ["--db", f"sqlite:///{store}", "render", str(template), "--recipients", recipients]
    result = invoke([*argv, "--mailing", "m", "--out", str(tmp_path / "o.jsonl"), option, value])

    assert result.exit_code == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: Invalid value for '{option}': "), last
    assert not store.exists()


def test_the_shard_parser_accepts_k_of_n_counted_from_one() -> None:
    assert parse_shard("1/1") == Shard(1, 1) and Shard(1, 1).label == "all"
    assert parse_shard("2/3") == Shard(2, 3)
    assert parse_shard("10000/10000") == Shard(10_000, 10_000)
    assert parse_workers("64") == 64
    with pytest.raises(InvalidSetting, match="shards count from 1"):
        parse_shard("3/2")


REFUSED_SETTINGS = {
    "two pool modes": ["pool", "create", "p", "--multi-use", "--require-issued"],
    "validity without issuance": ["pool", "create", "p", "--issued-valid-days", "3"],
    "per-customer range": ["pool", "create", "p", "--per-customer", "0"],
    "segment bounds": ["segment", "--min-issued", "3", "--max-issued", "1"],
    "alphabet": ["codes", "generate", "p", "--count", "5", "--alphabet", "aab"],
    "count": ["codes", "generate", "p", "--count", "0"],
}


@pytest.mark.parametrize("args", REFUSED_SETTINGS.values(), ids=list(REFUSED_SETTINGS))
def test_a_refused_setting_names_options_of_the_command_run(
    args: list[str], tmp_path: Path
) -> None:
    result = invoke(["--db", f"sqlite:///{tmp_path / 'store.db'}", *args])
    assert result.exit_code in (1, 2), result.stdout
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", result.stderr.strip().splitlines()[-1]))
    assert flags, result.stderr  # the library named a setting; the CLI shows it as a flag
    command: click.Command = cli_module.cli
    for name in (word for word in args if word.isalpha()):
        if not isinstance(command, click.Group):
            break
        found = command.get_command(click.Context(command), name)
        assert found is not None
        command = found
    # --help is every command's own, and a refusal may point to it.
    options = {"--help", *(opt for param in command.params for opt in param.opts)}
    assert flags <= options, (flags, sorted(options))


def test_the_library_names_the_setting_and_the_cli_its_flag() -> None:
    refused = InvalidSetting("must be at least 1", "issued_valid_days")
    assert str(refused) == "issued_valid_days must be at least 1"
    assert refused.naming(cli_flag) == "--issued-valid-days must be at least 1"
    placed = InvalidSetting("{a_b} {x} needs {c}, not '{a_b}{'", "a_b", "c")
    assert placed.naming(cli_flag) == "--a-b {x} needs --c, not '--a-b{'"


def test_a_refused_render_setting_is_shown_as_the_option_that_carries_it(tmp_path: Path) -> None:
    # The library says ``variables``; the command's parameter of that name is --var.
    template = tmp_path / "t.j2"
    template.write_text("Hi")
    recipients = tmp_path / "r.csv"
    recipients.write_text("id\nann\n")
    args: list[str | Path] = [
        *("render", template, "--recipients", recipients),
        *("--mailing", "m1", "--var", "client=x"),
    ]
    result = invoke(["--db", f"sqlite:///{tmp_path / 'store.db'}", *args])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --var cannot name 'client': it would hide the recipient"
    )
