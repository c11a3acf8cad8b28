"""The columns a template reads that its recipients file lacks, found before anything moves.

One analysis behind ``check --recipients``, which reports every such
column, and ``render``, which refuses the mailing before a code is claimed
or the mailing recorded when one of them is read with no fallback: without
``|default(…)`` or an ``is defined`` test, such a column fails every
recipient that lacks it, and a CSV file's recipients all lack what its
header lacks. Each column is named with where the template reads it (the
partial too) and what the file has instead: its header line, and a column
that differs only in case (names are matched exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promomail.templating.errors import MailingError
from promomail.templating.mailing.recipients import file_columns
from promomail.templating.template.analysis import TemplateUsage


@dataclass(frozen=True)
class MissingColumn:
    """A column the template reads that the recipients file does not have."""

    column: str
    #: The template's line (of the include, when the read is in a partial).
    line: int
    #: Read with a fallback somewhere: recipients render without it.
    optional: bool = False
    #: (partial, line in it) when the template reads it in a partial.
    partial: tuple[str, int] | None = None
    #: A column of the file whose name differs only in case.
    near: str | None = None

    def place(self, template: str) -> str:
        """Where the template reads the column: ``welcome.j2, line 4`` (and the partial's line)."""
        where = f"{template}, line {self.line}"
        if self.partial is not None:
            where += f" (in {self.partial[0]}, line {self.partial[1]})"
        return where

    def as_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "line": self.line,
            "optional": self.optional,
            "partial": None
            if self.partial is None
            else {"name": self.partial[0], "line": self.partial[1]},
            "near": self.near,
        }


@dataclass(frozen=True)
class ColumnCheck:
    """The template's columns against one recipients file."""

    template: str
    recipients: str
    missing: tuple[MissingColumn, ...]
    #: What the file has, for a message: its header line, or its first record's keys.
    where: str

    @property
    def required(self) -> tuple[MissingColumn, ...]:
        """The missing columns read with no fallback: each fails every recipient."""
        return tuple(m for m in self.missing if not m.optional)

    def problem(self, missing: MissingColumn) -> str:
        """One missing column as ``check`` reports it at its line."""
        text = f"client.{missing.column} is not a column of {self.recipients} ({self.where})"
        if missing.partial is not None:
            text += f"; read in {missing.partial[0]}, line {missing.partial[1]}"
        if missing.near is not None:
            text += f"; the file has {missing.near!r} (names are matched exactly)"
        if missing.optional:
            text += "; where it is missing the template's fallback is used"
        return text

    def refusal(self) -> MissingColumns | None:
        """The error that refuses a render, or None when every column read without a
        fallback is there."""
        required = self.required
        if not required:
            return None
        named = ", ".join(
            f"{m.column!r} ({m.place(self.template)}"
            + (f"; the file has {m.near!r}" if m.near is not None else "")
            + ")"
            for m in required
        )
        first = required[0].column
        noun = "column" if len(required) == 1 else "columns"
        return MissingColumns(
            f"{self.recipients} has no {noun} {named}, which the template reads for every "
            f"recipient ({self.where}); nothing was rendered: add the {noun} to the file, or "
            f"give the template a fallback, e.g. client.{first}|default('')",
            self,
        )


class MissingColumns(MailingError):
    """A render refused up front: the template reads columns the recipients file lacks."""

    def __init__(self, message: str, check: ColumnCheck) -> None:
        super().__init__(message)
        self.check = check


def check_columns(template: str, usage: TemplateUsage, recipients_path: str) -> ColumnCheck:
    """The columns of ``usage`` the recipients file lacks (reads its header only, or
    a JSON Lines file until every column was seen in some record)."""
    found = file_columns(recipients_path, usage.columns)
    folded = {name.casefold(): name for name in reversed(found.names)}
    missing = sorted(
        (
            MissingColumn(
                column,
                line,
                optional=column in usage.optional_columns,
                partial=usage.column_partials.get(column),
                near=folded.get(column.casefold()),
            )
            for column, line in usage.columns.items()
            if column not in found.present
        ),
        # In the order the template reads them.
        key=lambda m: (m.line, m.partial[1] if m.partial is not None else 0),
    )
    return ColumnCheck(template, recipients_path, tuple(missing), found.where)
