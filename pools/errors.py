"""Errors of the issuance store; each message names the thing at fault."""

from __future__ import annotations

from dataclasses import dataclass


class PromomailError(Exception):
    """Base of every refusal a user can cause; the CLI prints it as one line."""


class StoreError(PromomailError):
    """The database cannot be reached or used."""


class InvalidSetting(PromomailError):
    """A setting or option value is not valid in itself (as opposed to refused in
    the store's current state); the message says what is allowed."""


class NotFound(PromomailError):
    """What a command or request names does not exist (a pool, mailing, token, redemption)."""


class PoolError(PromomailError):
    """A pool operation is refused (unknown pool, wrong status, bad setting)."""


class PoolNotFound(PoolError, NotFound):
    def __init__(self, pool_id: str) -> None:
        super().__init__(f"pool {pool_id!r} does not exist")
        self.pool_id = pool_id


class PoolExhausted(PoolError):
    def __init__(self, pool_id: str, needed: int, available: int) -> None:
        super().__init__(
            f"pool {pool_id!r} cannot cover the mailing: needed {needed}, available {available}"
        )
        self.pool_id = pool_id
        self.needed = needed
        self.available = available


class ReservationLost(PromomailError):
    """Reserved codes were taken back (voided or reclaimed) before being issued."""


@dataclass(frozen=True)
class LineProblem:
    line: int
    reason: str


class ImportRejected(PromomailError):
    """An upload had invalid lines and nothing was stored."""

    def __init__(self, source: str, problems: list[LineProblem], total_problems: int) -> None:
        self.source = source
        self.problems = problems
        self.total_problems = total_problems
        first = problems[0]
        more = f" (and {total_problems - 1} more problems)" if total_problems > 1 else ""
        super().__init__(f"{source}, line {first.line}: {first.reason}{more}; nothing was stored")


class GenerationError(PromomailError):
    """A code generation request cannot be met."""
