"""The command table, and what a run of the command line imports.

Every run imports :mod:`cli`; a command's module is imported only when that
command runs. These tests keep that true: ``--help`` loads no library code,
and a store command loads neither Jinja2 nor Alembic (on a store already at
the newest schema), measured in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import click
import pytest
from cli_helpers import Cli, invoke

import cli as cli_module
import delivery
import pools
import templating

ROOT = Path(__file__).resolve().parent.parent

#: Runs the command line with ARGV, then prints which modules it had imported.
_IMPORTS_OF_A_RUN = """
import json, sys
import cli
try:
    cli.cli.main(args=sys.argv[1:], prog_name="promomail")
except SystemExit:
    pass
print("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""

#: Neither for a store command (on a store at the newest schema).
HEAVY = ("jinja2", "alembic")


def _imported_by(*argv: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTS_OF_A_RUN, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    marker = result.stdout.rindex("\nMODULES ")
    return set(json.loads(result.stdout[marker + len("\nMODULES ") :]))


def _top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_help_imports_no_library_and_no_sqlalchemy() -> None:
    loaded = _imported_by("--help")
    assert "click" in loaded  # the probe itself works
    assert not _top_level(loaded) & {*HEAVY, "sqlalchemy", "commands"}
    assert {m for m in loaded if m.startswith("pools.")} <= {
        "pools.errors",
        "pools.store",  # the package's docstring only
        "pools.store.defaults",
        "pools.lazy_exports",
    }


@pytest.mark.parametrize(
    ("argv", "templates"),
    [
        (["redeem", "NO-SUCH-CODE"], False),
        (["pool", "list"], False),
        (["codes", "list", "nosuch"], False),
        (["customer", "c-1"], False),
        (["segment", "--min-issued", "1"], False),
        # Beside render in its module: template-side types (output formats), no Jinja2.
        (["mailings"], True),
        (["mailing", "show", "nosuch"], True),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_a_store_command_imports_neither_jinja2_nor_alembic(
    db_url: str, argv: list[str], templates: bool
) -> None:
    Cli(db_url).json("db", "upgrade")  # at the newest schema: nothing to migrate
    loaded = _imported_by("--db", db_url, *argv)
    assert "sqlalchemy" in loaded  # it did reach the store
    assert not _top_level(loaded) & set(HEAVY)
    assert ("templating" in _top_level(loaded)) is templates


def test_a_render_imports_what_it_needs(db_url: str, tmp_path: Path) -> None:
    """The other side of the tests above: the probe sees Jinja2 when it is used."""
    template = tmp_path / "t.j2"
    template.write_text("hello", encoding="utf-8")
    loaded = _imported_by("--db", db_url, "check", str(template))
    assert {"jinja2", "templating"} <= _top_level(loaded)


def test_every_command_of_the_table_loads_with_the_help_the_table_shows() -> None:
    group = cli_module.cli
    ctx = click.Context(group)
    assert group.list_commands(ctx) == sorted(cli_module.COMMANDS)
    for name, entry in cli_module.COMMANDS.items():
        command = group.get_command(ctx, name)
        assert command is not None, name
        assert command.get_short_help_str(limit=200) == entry.help, name


def test_help_lists_every_command_with_its_help() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0, result.stderr
    listed = result.stdout.split("Commands:", 1)[1]
    for name, entry in cli_module.COMMANDS.items():
        line = next(line for line in listed.splitlines() if line.split()[:1] == [name])
        shown = line.split(None, 1)[1]
        assert entry.help.startswith(shown.removesuffix("...")), (name, shown)


def test_version_is_the_package_version() -> None:
    result = invoke(["--version"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"promomail, version {version('promomail')}"


@pytest.mark.parametrize("package", [pools, templating, delivery], ids=lambda p: p.__name__)
def test_every_public_name_of_a_package_resolves(package: ModuleType) -> None:
    """The packages load names on first use: each one must be where the table says."""
    assert sorted(package._HOMES) == sorted(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = package.no_such_name
