"""Errors of the template side; each names the template (and line) at fault."""

from __future__ import annotations

from pools.errors import PromomailError


class TemplateError(PromomailError):
    """A template cannot be loaded or compiled."""

    def __init__(self, message: str, *, template: str, line: int | None = None) -> None:
        where = f"{template}, line {line}" if line is not None else template
        super().__init__(f"{where}: {message}")
        self.template = template
        self.line = line
        self.reason = message


class RecipientError(PromomailError):
    """A recipients file cannot be read; names the file and line."""


class RenderLimitExceeded(PromomailError):
    """A template hit a render-time limit (output size, loop size, arithmetic, time)."""


class MailingError(PromomailError):
    """A mailing cannot be rendered as asked."""
