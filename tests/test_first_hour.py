"""A new user's first hour: the demo's store is the one the commands use, a
typo in the store's path is named instead of answered with an empty store,
and a production host can install the runtime alone.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from promomail.pools import StoreConfig, open_engine
from tests.support.cli_helpers import invoke, promomail_script

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_templates"
TIMEOUT = 180
#: Test and development tools: never needed to run promomail.
TEST_TOOLS = {
    "pytest",
    "pytest-xdist",
    "hypothesis",
    "aiosmtpd",
    "ruff",
    "mypy",
    "httpx",
    "playwright",
    "schemathesis",
}


def _env() -> dict[str, str]:
    env = {**os.environ}
    env["PATH"] = f"{promomail_script().parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PROMOMAIL_DB", None)
    return env


def _promomail(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promomail_script()), *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _demo(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SAMPLES / "demo.sh")],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


# -- 1. the demo leaves the store the commands then use ----------------------------


def test_the_demo_leaves_the_default_store_every_sample_template_checks_against(
    tmp_path: Path,
) -> None:
    demo = _demo(tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "promomail.db").is_file()
    assert f"Store: {tmp_path / 'promomail.db'}" in demo.stdout
    # Without --db or PROMOMAIL_DB, as the tour and the preview page open it:
    # every sample template finds its pools (the preview page opens on the first).
    for template in sorted(SAMPLES.glob("*.j2")):
        checked = _promomail(
            tmp_path, "check", str(template), "--recipients", str(SAMPLES / "recipients.csv")
        )
        assert checked.returncode == 0, (template.name, checked.stdout, checked.stderr)
    # The code the README redeems is the one the demo gave cust-001.
    history = json.loads(_promomail(tmp_path, "customer", "cust-001", "--json").stdout)
    assert "WELCOME-M9EPXBC5" in {i["code"] for i in history["issuances"]}


def test_the_demo_never_removes_a_store_it_did_not_make(tmp_path: Path) -> None:
    someone = tmp_path / "promomail.db"
    someone.write_bytes(b"someone's data")
    demo = _demo(tmp_path)
    assert demo.returncode == 1
    assert f"Error: {someone} exists and was not made by this demo" in demo.stderr
    assert someone.read_bytes() == b"someone's data"


def test_a_missing_pool_names_the_store_looked_in(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    assert invoke(["--db", url, "pool", "create", "Welcome", "--id", "welcome"]).exit_code == 0
    shown = invoke(["--db", url, "pool", "show", "welcom"])
    assert shown.exit_code == 1
    assert (
        f"Error: pool 'welcom' does not exist in the store {db} (did you mean 'welcome'?)"
        in shown.stderr
    )
    # The template side says it too, in check and render.
    template = tmp_path / "spring.j2"
    template.write_text("{{ client.promocode('spring') }}\n", encoding="utf-8")
    recipients = tmp_path / "r.csv"
    recipients.write_text("id\n1\n", encoding="utf-8")
    checked = invoke(["--db", url, "check", str(template)])
    assert f"line 1: pool 'spring' does not exist in the store {db}" in checked.stderr
    out = tmp_path / "out.jsonl"
    rendered = invoke(
        [
            "--db",
            url,
            "render",
            str(template),
            "--recipients",
            str(recipients),
            "--mailing",
            "m",
            "--out",
            str(out),
        ]
    )
    assert rendered.exit_code == 1
    assert f"pool 'spring' does not exist in the store {db}" in rendered.stderr


# -- 2. a typo in the store's path ------------------------------------------------

#: Commands that only read, each with what it needs beside the store.
READING = [
    ["pool", "list"],
    ["pool", "show", "welcome"],
    ["codes", "list", "welcome"],
    ["imports", "welcome"],
    ["mailings"],
    ["mailing", "show", "m"],
    ["deliveries", "m"],
    ["customer", "cust-001"],
    ["segment", "--issued-from", "welcome"],
    ["token", "list"],
    ["db", "current"],
    ["check", str(SAMPLES / "welcome.j2")],
    ["preview", str(SAMPLES / "welcome.j2"), "--recipient", "id=1"],
]


@pytest.mark.parametrize("args", READING, ids=lambda a: " ".join(a[:2]))
def test_a_command_that_only_reads_never_creates_a_store(tmp_path: Path, args: list[str]) -> None:
    typo = tmp_path / "demo" / "promomal.db"
    typo.parent.mkdir()
    result = invoke(["--db", f"sqlite:///{typo}", *args])
    assert result.exit_code == 1, result.stdout
    assert result.stderr.startswith(f"Error: no store at {typo}: nothing was created there")
    assert result.stderr.rstrip().endswith("; check --db or PROMOMAIL_DB")
    assert len(result.stderr.splitlines()) == 1
    assert list(typo.parent.iterdir()) == []


def test_export_never_creates_a_store(tmp_path: Path) -> None:
    typo = tmp_path / "promomal.db"
    out = tmp_path / "issued.csv"
    result = invoke(["--db", f"sqlite:///{typo}", "export", "issuances", "--out", str(out)])
    assert result.exit_code == 1
    assert f"no store at {typo}" in result.stderr
    assert not typo.exists() and not out.exists()


def test_a_command_that_writes_still_creates_the_store(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    created = invoke(["--db", f"sqlite:///{db}", "pool", "create", "Spring"])
    assert created.exit_code == 0, created.stderr
    assert db.is_file()
    listed = invoke(["--db", f"sqlite:///{db}", "pool", "list"])
    assert listed.exit_code == 0 and "spring" in listed.stdout


def test_the_library_refuses_a_missing_store_only_when_asked_not_to_create(
    tmp_path: Path,
) -> None:
    from promomail.pools import (
        StoreNotFound,  # imported here: on a tree without it, this test fails alone
    )

    url = f"sqlite:///{tmp_path / 'nope.db'}"
    with pytest.raises(StoreNotFound, match=re.escape(str(tmp_path / "nope.db"))):
        open_engine(StoreConfig(url), create=False)
    assert not (tmp_path / "nope.db").exists()
    open_engine(StoreConfig(url)).dispose()
    open_engine(StoreConfig(url), create=False).dispose()
    # A relative path is named as the absolute file it would be.
    relative = make_url("sqlite:///promomal.db")
    with pytest.raises(StoreNotFound, match=re.escape(str(Path.cwd() / "promomal.db"))):
        open_engine(StoreConfig(relative.render_as_string()), create=False)


@pytest.mark.parametrize("given", [["--db", "URL"], ["--db=URL"]])
def test_db_after_the_command_says_where_it_goes(tmp_path: Path, given: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    args = [a.replace("URL", url) for a in given]
    result = subprocess.run(
        [str(promomail_script()), "pool", "list", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "Error: --db goes before the command: promomail --db URL pool list … (or set PROMOMAIL_DB)"
    )
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "x.db").exists()


# -- 10. the runtime install ------------------------------------------------------


def _readme_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"(?ms)^```sh\n(.*?)^```", readme)


def _runtime_install() -> str:
    """The README's install for a production host: the shell block after the two set-up ones."""
    blocks = _readme_blocks()
    assert 'pip install -e ".[dev]"' in blocks[0] and "pytest" in blocks[1]
    return blocks[2].strip()


def _project() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    return {"runtime": project["dependencies"], **project["optional-dependencies"]}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def test_the_readme_shows_the_runtime_install_below_the_two_set_up_commands() -> None:
    command = _runtime_install()
    installs = command.split("pip install", 1)[1].split()
    assert installs == ["."]  # the project alone, no extras
    depends = _project()
    assert {_name(r) for r in depends["dev"]} >= TEST_TOOLS
    assert not TEST_TOOLS & {_name(r) for r in depends["runtime"]}


@pytest.mark.slow
def test_the_runtime_install_resolves_without_a_test_tool(tmp_path: Path) -> None:
    """The README's command, as a dry run with the worktree's pip: what it would install."""
    pip_part = _runtime_install().split("&&")[-1].strip()
    args = shlex.split(pip_part)[1:]  # after ".venv/bin/pip"
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            *args,
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "promomail" in names and "fastapi" in names
    assert not names & TEST_TOOLS, names & TEST_TOOLS
