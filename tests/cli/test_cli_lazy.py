"""The command table, and what a run of the command line imports.

Every run imports :mod:`cli`; a command's module is imported only when that
command runs. These tests keep that true: ``--help`` loads no library code,
and a store command loads neither Jinja2 nor Alembic (on a store already at
the newest schema), measured in a child forked from an interpreter that has
imported none of them (each run starts as a fresh interpreter does).

Shell completion runs the program on every Tab: completing a command name or
an option loads no library code either (the console script's code in such a
child, and the installed ``promomail`` script with its imports listed by
``PYTHONPROFILEIMPORTTIME``), and only completing a pool id opens the store.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import click
import pytest

from promomail import cli as cli_module
from promomail import delivery, pools, templating
from promomail.commands.state import complete_pool_id
from promomail.pools.lazy_exports import stub_path, stub_text
from tests.support.cli_helpers import Cli, invoke, promomail_script
from tests.support.paths import REPO_ROOT
from tests.support.service_helpers import open_store

ROOT = REPO_ROOT

#: A process that runs the command line again and again, each time in a child
#: forked from it as it started: nothing of promomail, click or any library is
#: imported before the fork, so each child begins as a fresh interpreter does
#: and imports what a run of its own would, without an interpreter's start-up.
#: Reads one JSON request a line on stdin; answers with the child's exit code.
_FORKING_RUNNER = """
import json, os, signal, sys


def run(request):
    signal.alarm(120)  # a run that hangs is ended, and its test fails
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.argv = ["promomail", *request["argv"]]
    code, error = 0, None
    try:
        if request["script"]:
            # What the console script does, from the folder it is in.
            sys.path[0] = request["script_dir"]
            from promomail.cli import main

            code = main()
        else:
            from promomail import cli

            cli.cli.main(args=request["argv"], prog_name="promomail")
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:
        error = exc
    # The package's modules by their names in the tree (pools.errors for
    # promomail.pools.errors); before the traceback module, if one is needed.
    modules = sorted(m.removeprefix("promomail.") for m in sys.modules)
    if error is not None:
        import traceback

        traceback.print_exception(error)
        code = 1
    elif code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    with open(request["modules"], "w") as file:
        json.dump(modules, file)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            run(request)
        finally:
            os._exit(70)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    modules: set[str]


class ForkingRunner:
    """Runs of the command line, each in a child of :data:`_FORKING_RUNNER`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.process = subprocess.Popen(
            [sys.executable, "-c", _FORKING_RUNNER],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: list[str], *, env: dict[str, str], cwd: Path, script: bool = False) -> Run:
        """``argv`` as the console script runs it (``script``) or as ``cli.cli.main``."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.count += 1
        paths = {
            name: str(self.folder / f"{self.count}.{name}")
            for name in ("stdout", "stderr", "modules")
        }
        request = {
            "argv": argv,
            "env": env,
            "cwd": str(cwd),
            "script": script,
            "script_dir": str(promomail_script().parent),
            **paths,
        }
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, "the forking runner stopped"
        read = {name: Path(path).read_text(encoding="utf-8") for name, path in paths.items()}
        return Run(
            json.loads(answer), read["stdout"], read["stderr"], set(json.loads(read["modules"]))
        )

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.process.stdout.close()


_runner: ForkingRunner | None = None


@pytest.fixture(scope="module", autouse=True)
def _forking_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    global _runner
    _runner = ForkingRunner(tmp_path_factory.mktemp("runs"))
    try:
        yield
    finally:
        _runner.close()
        _runner = None


def _run(argv: list[str], *, env: dict[str, str], cwd: Path, script: bool = False) -> Run:
    assert _runner is not None
    return _runner.run(argv, env=env, cwd=cwd, script=script)


#: Neither for a store command (on a store at the newest schema).
HEAVY = ("jinja2", "alembic")


def _imported_by(*argv: str) -> set[str]:
    """Which modules a run of the command line with ``argv`` imports, from a fresh start."""
    result = _run(list(argv), env=dict(os.environ), cwd=ROOT)
    assert "Traceback" not in result.stderr, result.stderr
    return result.modules


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


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def upgraded_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A store of the module's, at the newest schema: a command has nothing to migrate."""
    for store in open_store(request.param, tmp_path_factory.mktemp("store")):
        Cli(store.url).json("db", "upgrade")
        yield store.url


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
    upgraded_store: str, argv: list[str], templates: bool
) -> None:
    loaded = _imported_by("--db", upgraded_store, *argv)
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
    assert sorted(n for names in package.EXPORTS.values() for n in names) == package.__all__
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = package.no_such_name


@pytest.mark.parametrize(
    "package", ["promomail.pools", "promomail.templating", "promomail.delivery"]
)
def test_each_packages_stub_is_written_from_its_table(package: str) -> None:
    """Type checkers read ``__init__.pyi``; it must say what the table says
    (``python -c "from promomail.pools.lazy_exports import write_stubs; write_stubs()"``)."""
    module = importlib.import_module(package)
    written = stub_path(package).read_text(encoding="utf-8")
    assert written == stub_text(package, module.EXPORTS)


# ---------------------------------------------------------------------------
# Shell completion: the installed script, as bash, zsh and fish run it
# ---------------------------------------------------------------------------

#: What completing a command name or an option must not import.
NOT_FOR_COMPLETION = (
    *HEAVY,
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "psycopg",
    "rich",
    "delivery",
    "service",
)
#: The only modules of the library packages it may import: the lazy package
#: tables, the errors, and the constants options are declared with.
THIN_LIBRARY_MODULES = {
    "pools",
    "pools.lazy_exports",
    "pools.errors",
    "pools.store",
    "pools.store.defaults",
    "pools.choices",
    "templating",
    "templating.choices",
}


@dataclass(frozen=True)
class Completion:
    values: list[str]
    #: value -> its help, as zsh shows it ("_" when none).
    helps: dict[str, str]
    modules: set[str]


def _installed_script(argv: list[str], *, env: dict[str, str], cwd: Path | None = None) -> Run:
    """The installed ``promomail`` script in a process of its own, its imports
    listed by ``PYTHONPROFILEIMPORTTIME``."""
    result = subprocess.run(
        [str(promomail_script()), *argv],
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    # Every module the interpreter imports, one line each on stderr.
    modules = {
        line.rsplit("|", 1)[1].strip().removeprefix("promomail.")
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    }
    return Run(result.returncode, result.stdout, result.stderr, modules)


def _complete(
    words: list[str],
    *,
    shell: str = "bash",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    installed: bool = False,
) -> Completion:
    """What ``promomail`` answers a Tab after ``words`` (the last one is being completed):
    the console script's code in a forked child, or the ``installed`` script itself."""
    # The store is named on the line or by ``env``, never by the test's own environment.
    environ = {name: value for name, value in os.environ.items() if name != "PROMOMAIL_DB"}
    environ |= {
        "_PROMOMAIL_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": shlex.join(["promomail", *words]),
        "COMP_CWORD": str(len(words)),
        **(env or {}),
    }
    if installed:
        result = _installed_script([], env=environ, cwd=cwd)
    else:
        result = _run([], env=environ, cwd=cwd or Path.cwd(), script=True)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    modules = result.modules
    assert "click" in modules  # the probe itself works
    if shell == "zsh":
        lines = result.stdout.splitlines()
        triples = [lines[i : i + 3] for i in range(0, len(lines), 3)]
        return Completion([v for _, v, _ in triples], {v: h for _, v, h in triples}, modules)
    # "type,value" lines; bash gets one empty line when nothing matches.
    values = [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]
    return Completion(values, {}, modules)


def _assert_no_library_code(modules: set[str]) -> None:
    assert not _top_level(modules) & set(NOT_FOR_COMPLETION), sorted(
        m for m in modules if m.split(".")[0] in NOT_FOR_COMPLETION
    )
    library = {m for m in modules if m.split(".")[0] in ("pools", "templating")}
    assert library <= THIN_LIBRARY_MODULES, sorted(library - THIN_LIBRARY_MODULES)


def _commands() -> list[tuple[list[str], click.Command]]:
    """Every command of the tree with the words that name it: ["pool", "create"], ..."""
    found: list[tuple[list[str], click.Command]] = []

    def walk(group: click.Group, ctx: click.Context, prefix: list[str]) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, name
            found.append(([*prefix, name], command))
            if isinstance(command, click.Group):
                walk(command, click.Context(command, parent=ctx), [*prefix, name])

    walk(cli_module.cli, click.Context(cli_module.cli), [])
    return found


def _first_argument_is_a_pool_id(command: click.Command) -> bool:
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    completes = getattr(arguments[0], "_custom_shell_complete", None) if arguments else None
    return completes is complete_pool_id


def test_completing_a_command_name_offers_the_commands() -> None:
    every = _complete([""])
    assert sorted(every.values) == sorted(cli_module.COMMANDS)
    assert sorted(_complete(["re"]).values) == ["redeem", "release", "render"]
    assert _complete(["pool", "a"]).values == ["activate", "archive"]
    # zsh shows each command's help line, read from the table.
    described = _complete(["po"], shell="zsh")
    assert described.values == ["pool"]
    shown = described.helps["pool"]
    assert shown.startswith("Create, activate")
    assert cli_module.COMMANDS["pool"].help.startswith(shown.removesuffix("..."))


def test_completing_an_option_offers_the_commands_options() -> None:
    assert sorted(_complete(["--"]).values) == ["--db", "--help", "--version"]
    assert sorted(_complete(["render", "--f"]).values) == ["--failures", "--format"]
    assert set(_complete(["pool", "create", "--"]).values) >= {
        "--id",
        "--multi-use",
        "--per-customer",
        "--json",
        "--help",
    }
    # Choices are declared from pools.choices and templating.choices.
    assert _complete(["render", "--format", ""]).values == ["jsonl", "eml"]
    assert _complete(["token", "create", "--scope", ""]).values == [
        "read",
        "redeem",
        "admin",
        "events",
    ]
    assert _complete(["codes", "list", "p", "--state", "re"]).values == ["reserved", "redeemed"]


@pytest.mark.parametrize(
    "words",
    [
        [""],
        ["re"],
        ["--"],
        ["--db", "sqlite:///x.db", "s"],
        ["render", "--format", ""],
        ["token", "create", "--scope", ""],
        *([*path, "--"] for path, _ in _commands()),
        # A top-level command's first argument, unless it is a pool id (below).
        *(
            [*path, ""]
            for path, command in _commands()
            if len(path) == 1 and not _first_argument_is_a_pool_id(command)
        ),
    ],
    ids=lambda words: " ".join(words) or "''",
)
def test_completing_a_command_or_an_option_imports_no_library_code(words: list[str]) -> None:
    completion = _complete(words)
    if words[-1].startswith("-"):
        assert completion.values  # every command has options: it did complete
    _assert_no_library_code(completion.modules)


def test_help_of_the_installed_script_imports_no_library_code() -> None:
    result = _installed_script(["--help"], env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "click" in result.modules
    _assert_no_library_code(result.modules)


def test_completing_with_the_installed_script_imports_no_library_code() -> None:
    """The tests above run the console script's code in a forked child; this is
    the script itself, as the shell runs it."""
    for words in ([""], ["pool", "--"]):
        completion = _complete(words, installed=True)
        assert completion.values == _complete(words).values
        _assert_no_library_code(completion.modules)


def test_completing_a_pool_id_offers_the_stores_pools(db_url: str, tmp_path: Path) -> None:
    store = Cli(db_url)
    store.json("pool", "create", "Welcome offer", "--id", "welcome")
    store.json("pool", "create", "Winter sale", "--id", "winter-sale")
    store.json("pool", "create", "Spring", "--id", "spring")
    store.json("pool", "create", "Percent 100%", "--id", "w_x")

    by_option = _complete(["--db", db_url, "codes", "list", "w"], cwd=tmp_path)
    assert by_option.values == ["w_x", "welcome", "winter-sale"]
    assert "sqlalchemy" in by_option.modules  # a pool id does open the store
    # PROMOMAIL_DB, as every command reads it; zsh shows each pool's name.
    by_env = _complete(
        ["pool", "show", "we"], shell="zsh", env={"PROMOMAIL_DB": db_url}, cwd=tmp_path
    )
    assert by_env.helps == {"welcome": "Welcome offer"}
    # --pool options and repeated pool options complete the same way.
    assert _complete(["--db", db_url, "redeem", "CODE", "--pool", "s"]).values == ["spring"]
    assert _complete(["--db", db_url, "segment", "--issued-from", ""]).values == [
        "spring",
        "w_x",
        "welcome",
        "winter-sale",
    ]
    # A LIKE wildcard in what is typed is a character, not "any".
    assert _complete(["--db", db_url, "codes", "list", "w_"]).values == ["w_x"]
    assert _complete(["--db", db_url, "codes", "list", "nothing"]).values == []


def test_completing_a_pool_id_without_a_store_offers_nothing_and_creates_nothing(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing.db"
    completion = _complete(["--db", f"sqlite:///{missing}", "codes", "list", ""])
    assert completion.values == []
    # The default store, sqlite:///promomail.db in the working directory.
    assert _complete(["codes", "list", ""], cwd=tmp_path).values == []
    assert list(tmp_path.iterdir()) == []
    # A store not created yet (no tables) and an unusable URL offer nothing either.
    missing.write_bytes(b"")
    assert _complete(["--db", f"sqlite:///{missing}", "pool", "show", ""]).values == []
    assert _complete(["--db", "mysql://nowhere/db", "pool", "show", ""]).values == []
