"""The promomail command line, for command-line tests: in-process or as a process.

:class:`Cli` runs it through click's CliRunner (fast, and a traceback fails
the test); :func:`promomail_command` is the argv of the installed console
script, for what needs a real process (signals, kills, races, start-up).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from promomail.cli import cli


def invoke(
    args: Sequence[str | Path],
    *,
    input: bytes | str | None = None,
    env: Mapping[str, str | None] | None = None,
    runner: CliRunner | None = None,
) -> Result:
    """``promomail ARGS…`` in-process; an exception escaping the command fails the test."""
    return (runner or CliRunner()).invoke(
        cli, [str(a) for a in args], input=input, env=env, catch_exceptions=False
    )


@dataclass
class Cli:
    """``promomail --db URL ...`` through click's CliRunner.

    The runner does not catch exceptions, so a traceback fails the test
    instead of passing as "exit status 1". Test modules subclass this for
    shortcuts of their own.
    """

    url: str
    runner: CliRunner = field(default_factory=CliRunner, kw_only=True)

    def __call__(self, *args: str | Path, input: bytes | str | None = None) -> Result:
        return invoke(["--db", self.url, *args], input=input, runner=self.runner)

    def ok(self, *args: str | Path, input: bytes | str | None = None) -> Result:
        """The result of ``args``, which must succeed."""
        result = self(*args, input=input)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return result

    def json(self, *args: str | Path, input: bytes | str | None = None) -> Any:
        """The document of ``args --json``, which must succeed."""
        return json.loads(self.ok(*args, "--json", input=input).stdout)


def promomail_script() -> Path:
    """The installed console script, of this interpreter first (pip install -e .)."""
    beside_python = Path(sys.executable).with_name("promomail")
    if os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which("promomail")
    assert found, "the promomail console script is not installed (pip install -e .)"
    return Path(found)


def promomail_command(db_url: str, *args: str | Path) -> list[str]:
    """argv of ``promomail --db URL ARGS…`` run as its own process."""
    return [str(promomail_script()), "--db", db_url, *map(str, args)]
