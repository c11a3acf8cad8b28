"""The promomail command line run in-process, for command-line tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from click.testing import CliRunner, Result

from cli import cli


@dataclass
class Cli:
    """``promomail --db URL ...`` through click's CliRunner.

    The runner does not catch exceptions, so a traceback fails the test
    instead of passing as "exit status 1". Test modules subclass this for
    shortcuts of their own.
    """

    url: str
    runner: CliRunner = field(default_factory=CliRunner)

    def __call__(self, *args: str, input: bytes | str | None = None) -> Result:
        return self.runner.invoke(
            cli, ["--db", self.url, *args], input=input, catch_exceptions=False
        )

    def json(self, *args: str, input: bytes | str | None = None) -> Any:
        """The document of ``args --json``, which must succeed."""
        result = self(*args, "--json", input=input)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)
