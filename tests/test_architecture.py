"""The dependency rules of the tree, read from every module's imports.

``templating`` and ``delivery`` depend on ``pools``, never the reverse;
``delivery`` depends on ``pools`` alone and reaches the store only through
the protocols it defines; the template side is pure Jinja2; front ends never
import each other's modules nor the database driver's exceptions, which the
store translates once (pools/store/db.py).
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from importlib.metadata import distribution
from pathlib import Path

import pytest

from promomail import pools, templating

ROOT = Path(__file__).resolve().parent.parent


#: The one import package the folders of the tree make (pyproject.toml's package-dir).
PACKAGE = "promomail"


class _AsInTheTree(ast.NodeTransformer):
    """Imports of the package, named as the tree's folders name them:
    ``promomail.pools.errors`` is ``pools.errors``, ``from promomail import cli``
    imports ``cli``."""

    def visit_Import(self, node: ast.Import) -> ast.Import:
        for alias in node.names:
            alias.name = alias.name.removeprefix(f"{PACKAGE}.")
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.Import | ast.ImportFrom:
        if node.level or not node.module:
            return node
        if node.module == PACKAGE:
            return ast.Import(names=node.names)
        node.module = node.module.removeprefix(f"{PACKAGE}.")
        return node


def _parse(path: Path) -> ast.Module:
    tree = ast.parse(path.read_bytes())
    _AsInTheTree().visit(tree)  # in place: the module node stays
    return tree


def _modules(*where: str) -> Iterator[Path]:
    for place in where:
        path = ROOT / place
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


#: Where each public name of a package lives: ``from pools import X`` imports X's module.
HOMES = {
    package: {
        name: module.removeprefix("promomail.")
        for module, names in exports.items()
        for name in names
    }
    for package, exports in (("pools", pools.EXPORTS), ("templating", templating.EXPORTS))
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
            homes = HOMES.get(node.module, {})
            names.update(homes[alias.name] for alias in node.names if alias.name in homes)
    return names


def _offending(where: tuple[str, ...], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in _modules(*where):
        bad = sorted(
            name
            for name in _imports(path)
            if any(name == f or name.startswith(f"{f}.") for f in forbidden)
        )
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


RULES = {
    "the store knows nothing of templates, the sender or front ends": (
        ("pools",),
        (
            *("templating", "delivery", "jinja2", "markupsafe"),
            *("cli", "commands", "service", "click", "fastapi"),
        ),
    ),
    "the sender reads render output, not templating, and the store only through pools": (
        ("delivery",),
        (
            *("templating", "jinja2", "markupsafe", "sqlalchemy", "pools.store"),
            *("cli", "commands", "service", "click", "fastapi"),
        ),
    ),
    "the template side knows no front end": (
        ("templating",),
        ("cli", "commands", "service", "click", "fastapi"),
    ),
    "the template itself is pure Jinja2: no store, no files of recipients": (
        ("templating/template",),
        (
            *(f"pools.{part}" for part in ("store", "admin", "codes", "issuing")),
            *(f"pools.{part}" for part in ("after_sending", "history")),
            "sqlalchemy",
            "templating.mailing",
        ),
    ),
    "the service never imports the command line": (("service",), ("cli", "commands", "click")),
    "driver errors are translated by the store alone": (
        (
            *(f"pools/{part}.py" for part in ("__init__", "errors", "identifiers", "lazy_exports")),
            *(
                f"pools/{part}"
                for part in ("admin", "codes", "issuing", "after_sending", "history")
            ),
            *("templating", "delivery", "service", "commands", "cli.py"),
        ),
        ("sqlalchemy.exc", "psycopg", "sqlite3"),
    ),
}


@pytest.mark.parametrize("rule", RULES)
def test_dependency_rule(rule: str) -> None:
    where, forbidden = RULES[rule]
    assert list(_modules(*where)), where  # the rule reads real modules
    assert _offending(where, forbidden) == {}


def test_the_rules_catch_an_offending_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from sqlalchemy.exc import IntegrityError\nimport templating.mailing.run\n")
    assert _imports(module) >= {"sqlalchemy.exc", "templating.mailing.run"}


def test_a_public_name_counts_as_an_import_of_its_module(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from pools import open_engine\n")
    assert "pools.store.db" in _imports(module)


def test_templating_reaches_the_store_through_its_public_names() -> None:
    # pools.lazy_exports is the mechanism of the table itself.
    reaching = {
        str(path.relative_to(ROOT)): private
        for path in _modules("templating")
        for private in [sorted(m for m in _from_modules(path) if m.startswith("pools."))]
        if private and private != ["pools.lazy_exports"]
    }
    assert reaching == {}


def _from_modules(path: Path) -> set[str]:
    return {
        node.module
        for node in ast.walk(_parse(path))
        if isinstance(node, ast.ImportFrom) and node.module and not node.level
    } | {
        alias.name
        for node in ast.walk(_parse(path))
        if isinstance(node, ast.Import)
        for alias in node.names
    }


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _flag_mentions(path: Path) -> list[str]:
    tree = _parse(path)
    skip = _docstrings(tree)
    return [
        f"{path.name}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and re.search(r"(?<![\w-])--(?:[a-z]|$)", node.value)
    ]


def test_library_messages_name_settings_not_command_line_flags() -> None:
    # A front end adds its own names (commands.errors.cli_flag); the library's words serve both.
    mentions = [
        m for path in _modules("pools", "templating", "delivery") for m in _flag_mentions(path)
    ]
    assert mentions == []


def test_the_flag_check_sees_a_flag_in_a_message_but_not_in_a_docstring(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text(
        '"""Docs may say --mailing."""\nraise ValueError(f"--count {n} is too big")\n'
    )
    assert _flag_mentions(module) == ["bad.py:2: '--count '"]


# ---------------------------------------------------------------------------
# No import cycles
# ---------------------------------------------------------------------------

LIBRARY = ("pools", "templating", "delivery", "service", "commands", "cli.py")


def _import_graph(root: Path, where: tuple[str, ...]) -> dict[str, set[str]]:
    """Module → the modules of ``where`` it imports. ``from package import name``
    counts as an import of the submodule when ``name`` is one (the package's
    ``__init__`` is not what it needs), else of the package."""
    paths = {
        _module_name_in(root, path): path
        for place in where
        for path in (
            sorted((root / place).rglob("*.py")) if (root / place).is_dir() else [root / place]
        )
    }
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [
                    f"{node.module}.{alias.name}"
                    if f"{node.module}.{alias.name}" in paths
                    else node.module
                    for alias in node.names
                ]
            else:
                continue
            graph[name].update(t for t in targets if t in paths and t != name)
    return graph


def _module_name_in(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_anywhere_in_the_library() -> None:
    cycles = _cycles(_import_graph(ROOT, LIBRARY))
    assert cycles == [], cycles


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("from pkg import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from pkg import a\n")
    assert _cycles(_import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_front_ends_never_import_each_other() -> None:
    """The service never imports the command line; the command line reaches the
    service only to run it (``promomail serve``), through the package's entry."""
    graph = _import_graph(ROOT, LIBRARY)
    service = {m for m in graph if m == "service" or m.startswith("service.")}
    command_line = {m for m in graph if m in ("cli", "commands") or m.startswith("commands.")}
    assert {m: graph[m] & command_line for m in service if graph[m] & command_line} == {}
    reaching = {m: graph[m] & service for m in command_line if graph[m] & service}
    assert reaching == {"commands.service": {"service"}}


#: The test folders: one per package or front end of the tree, and the helpers they share.
TEST_FOLDERS = {"pools", "templating", "delivery", "cli", "service", "support"}


def test_the_tests_mirror_the_tree() -> None:
    """Each test folder names a package or front end (``cli`` for cli.py and
    commands/) of the tree; only whole-system tests sit at the top."""
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name[0] not in "._"}
    assert folders == TEST_FOLDERS
    for folder in TEST_FOLDERS - {"support", "cli"}:
        assert (ROOT / folder).is_dir(), f"tests/{folder} mirrors nothing"


def test_test_modules_share_helpers_only_through_support() -> None:
    """A test module imports no other test module: what tests share lives in
    tests/support (helpers) or a folder's conftest.py (fixtures)."""
    offending = {
        str(path.relative_to(ROOT)): sorted(
            name
            for name in _imports(path)
            if re.match(r"(tests\.(\w+\.)?)?test_\w+$", name.rsplit(".", 1)[0])
            or re.match(r"(tests\.(\w+\.)?)?test_\w+$", name)
        )
        for path in _modules("tests")
    }
    assert {path: names for path, names in offending.items() if names} == {}


# ---------------------------------------------------------------------------
# One import package
# ---------------------------------------------------------------------------

#: The package's parts, each a folder (or cli.py) at the top of the tree.
SUBPACKAGES = ("cli", "commands", "delivery", "pools", "service", "templating")


def _bare_imports(path: Path) -> list[str]:
    """The imports of ``path`` that name a part of the package without ``promomail.``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return sorted(name for name in names if name.split(".")[0] in SUBPACKAGES)


def test_every_import_of_the_package_names_promomail() -> None:
    """``import pools`` works only from the root of a checkout; installed, the
    package is ``promomail.pools``."""
    bare = {
        str(path.relative_to(ROOT)): found
        for path in _modules(*LIBRARY, "tests", "bench")
        if (found := _bare_imports(path))
    }
    assert bare == {}


def test_the_bare_import_check_sees_one(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from promomail.pools import errors\nimport pools.store\n")
    assert _bare_imports(module) == ["pools.store"]


def test_the_distribution_installs_promomail_alone() -> None:
    """No generic top-level name (``cli``, ``pools``, ``service``…) in a user's
    environment: one import package, whose parts are the folders of the tree."""
    top_level = distribution("promomail").read_text("top_level.txt") or ""
    assert top_level.split() == [PACKAGE]
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    assert setuptools["package-dir"] == {PACKAGE: "."}
    assert "py-modules" not in setuptools
    in_tree = {PACKAGE} | {
        ".".join((PACKAGE, *init.parent.relative_to(ROOT).parts))
        for part in SUBPACKAGES
        if (ROOT / part).is_dir()
        for init in (ROOT / part).rglob("__init__.py")
    }
    listed = set(setuptools["packages"])
    assert in_tree <= listed  # a new subpackage is listed
    for extra in listed - in_tree:
        # Folders of data files only (templates, migration versions): listed so
        # setuptools ships them as parts of the package, as it warns otherwise.
        folder = ROOT.joinpath(*extra.split(".")[1:])
        assert folder.is_dir() and not (folder / "__init__.py").exists(), extra
