"""A campaign's command line for the end-to-end command tests: pools, files, renders."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import Result

from tests.support import cli_helpers

#: A one-part message (SMS-like) handing out one spring code.
SPRING = "Hi {{ client.first_name }}, your code: {{ client.promocode('spring') }}\n"


@dataclass
class CampaignCli(cli_helpers.Cli):
    """The command line, with a folder for the files its tests write."""

    folder: Path
    _outputs: Iterator[int] = field(default_factory=itertools.count)

    def pool(
        self, pool_id: str, *options: str, codes: Sequence[str] = (), generate: int = 0
    ) -> None:
        """An active pool holding ``codes`` (uploaded from stdin) and ``generate`` random ones."""
        created = self.json(
            "pool", "create", pool_id, "--id", pool_id, "--description", "test", "--activate",
            *options,
        )  # fmt: skip
        assert created["status"] == "active"
        if codes:
            uploaded = self("codes", "upload", pool_id, "-", input="".join(f"{c}\n" for c in codes))
            assert uploaded.exit_code == 0, uploaded.stderr
        if generate:
            self.json("codes", "generate", pool_id, "--count", str(generate))

    def pools(self) -> dict[str, dict[str, Any]]:
        return {p["id"]: p for p in self.json("pool", "list")}

    def recipients(self, rows: Sequence[str], name: str | None = None) -> str:
        """A recipients CSV: each id with an e-mail address and a first name."""
        path = self.folder / (name or f"recipients-{next(self._outputs)}.csv")
        lines = ["id,email,first_name", *(f"{r},{r}@example.com,Name-{r}" for r in rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(path)

    def template(self, source: str, name: str = "message.j2") -> str:
        path = self.folder / name
        path.write_text(source, encoding="utf-8")
        return str(path)

    def render(
        self, template: str | Path, recipients: str, mailing: str
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any], Result]:
        """Render to a fresh JSON Lines file: (messages by recipient, summary, result)."""
        out = self.folder / f"{mailing}-{next(self._outputs)}.jsonl"
        result = self(
            "render", str(template), "--recipients", recipients, "--mailing", mailing,
            "--out", str(out), "--json",
        )  # fmt: skip
        assert result.exit_code == 0, (result.stdout, result.stderr)
        summary: dict[str, Any] = json.loads(result.stdout)
        lines = out.read_text(encoding="utf-8").splitlines()
        messages = {m["recipient"]: m for m in map(json.loads, lines)}
        return messages, summary, result

    def customer(self, customer_id: str) -> dict[str, Any]:
        document: dict[str, Any] = self.json("customer", customer_id)
        return document


def error_line(result: Result) -> str:
    """The single ``Error:`` line of a refused command, checked for shape."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), result.stderr
    assert result.stdout == ""
    return lines[-1]


def refusal(result: Result) -> dict[str, Any]:
    """The JSON document of a refused ``redeem --json``: exit 1, no traceback."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document
