"""What ``--help`` and a usage error tell a person, through the console script itself.

Help lines are whole (never cut with "..."), every option says what it is
for, a usage error is one ``Error:`` line, and every environment variable
the code reads is in the one list that ``--help`` and the README show.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from promomail.cli import ENVIRONMENT as VARIABLES
from promomail.cli import cli
from tests.support.cli_helpers import promomail_script
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
#: The code that reads the environment: everything but the tests and benchmarks.
CODE = ["cli.py", "commands", "pools", "templating", "delivery", "service"]


def _promomail(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    env.pop("PROMOMAIL_DB", None)
    return subprocess.run(
        [str(promomail_script()), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            found = command.get_command(ctx, name)
            assert found is not None
            yield from _commands(found, (*path, name))


GROUPS = [path for path, command in _commands(cli) if isinstance(command, click.Group)]


@pytest.mark.parametrize("group", GROUPS, ids=lambda path: " ".join(path) or "promomail")
def test_no_help_line_is_cut_short(group: tuple[str, ...]) -> None:
    shown = _promomail(*group, "--help")
    assert shown.returncode == 0, shown.stderr
    commands = shown.stdout[shown.stdout.index("Commands:") :]
    assert "..." not in commands and "…" not in commands, commands


def test_every_option_says_what_it_is_for() -> None:
    silent = [
        f"{' '.join(('promomail', *path))} {max(param.opts, key=len)}"
        for path, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert silent == []
    segment = _promomail("segment", "--help").stdout
    assert re.search(r"--since DATE\s+Count only codes issued at or after DATE", segment)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["pool", "show"],
            "Error: Missing argument 'ID'. Usage: promomail pool show [OPTIONS] ID "
            "(more: promomail pool show --help)",
        ),
        (
            ["--bogus", "pool", "list"],
            "Error: No such option '--bogus'. Usage: promomail [OPTIONS] COMMAND [ARGS]... "
            "(more: promomail --help)",
        ),
        (
            ["pool", "shw"],
            "Error: No such command 'shw'. Did you mean 'show'? Usage: promomail pool "
            "[OPTIONS] COMMAND [ARGS]... (more: promomail pool --help)",
        ),
        (
            ["codes", "list", "spring", "--limit", "many"],
            "Error: Invalid value for '--limit': 'many' is not a valid integer range. "
            "Usage: promomail codes list [OPTIONS] ID (more: promomail codes list --help)",
        ),
    ],
)
def test_a_usage_error_is_one_line(argv: list[str], expected: str) -> None:
    refused = _promomail(*argv)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.splitlines() == [expected]


# -- environment variables ---------------------------------------------------------

_ENVIRON_READS = ("get", "pop", "setdefault")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _key_values(module: Any, node: ast.expr) -> list[str]:
    """The variable names an ``environ`` key expression can be."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name):
        value = getattr(module, node.id)
        assert isinstance(value, str), (module.__name__, node.id)
        return [value]
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        # A table of variables (``ENVIRONMENT[name]``): any of its values.
        table = getattr(module, node.value.id)
        assert isinstance(table, dict), (module.__name__, node.value.id)
        return list(table.values())
    raise AssertionError(f"{module.__name__}: cannot tell which variable {ast.unparse(node)} is")


def _is_environ(node: ast.expr) -> bool:
    """``os.environ``, or a mapping passed along as ``environ``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id == "environ"


def variables_read() -> set[str]:
    """Every environment variable the code reads, found in its syntax trees."""
    found: set[str] = set()
    files = [ROOT / "cli.py", *(p for d in CODE[1:] for p in (ROOT / d).rglob("*.py"))]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            key: ast.expr | None = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                reads = node.func.attr in _ENVIRON_READS and _is_environ(node.func.value)
                if reads or node.func.attr == "getenv":
                    key = node.args[0]
            elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                key = node.slice
            elif isinstance(node, ast.keyword) and node.arg == "envvar":
                key = node.value
            if key is not None:
                # Imported only here: a migration script is not a module to import.
                found.update(_key_values(importlib.import_module(_module_name(path)), key))
    return found


def test_every_variable_the_code_reads_is_in_the_one_list() -> None:
    read = variables_read()
    listed = {v.name for v in VARIABLES}
    assert read == listed
    # The scan sees what it must: the database, the sender, a service's key.
    assert {"PROMOMAIL_DB", "PROMOMAIL_FROM", "PROMOMAIL_POSTMARK_AUTH"} <= read


def test_help_and_readme_show_every_variable() -> None:
    shown = _promomail("--help").stdout
    # Wrapped to the terminal: compared word by word.
    section = " ".join(shown[shown.index("Environment variables:") :].split())
    for variable in VARIABLES:
        assert f"{variable.name} {variable.does} [{variable.read_by}]" in section
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([A-Z_]+)` \| (.*?) \| (.*?) \|$", readme, re.M)
    assert rows == [(v.name, v.read_by, v.does) for v in VARIABLES]
