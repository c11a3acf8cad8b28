"""Errors of the template side; each names the template (and line) at fault."""

from __future__ import annotations

from promomail.pools import PromomailError


class InvalidTemplate(PromomailError):
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


class PerRecipientFailure(Exception):
    """Fails one recipient's message, not the run: the render notes the reason
    beside that recipient and goes on (or stops, as the mailing's policy says).

    Outside :class:`PromomailError` on purpose: an ``except PromomailError``
    that ends a command must never swallow one recipient's failure.
    """


class RecipientFailed(PerRecipientFailure):
    """One recipient's message could not be rendered; the reason is user-facing."""


class UnwritableMessage(PerRecipientFailure):
    """One message cannot be written as it is; the reason is user-facing.

    ``character`` is the character at fault when one is, so the caller can
    name the recipient's column that brought it in.
    """

    def __init__(self, reason: str, character: str | None = None) -> None:
        super().__init__(reason)
        self.character = character


class PoolRanOut(PerRecipientFailure):
    """A pool has no code left for this recipient (policy ``stop`` or ``skip``)."""

    def __init__(self, pool_id: str) -> None:
        super().__init__(f"pool {pool_id!r} ran out of codes")
        self.pool_id = pool_id
