"""Errors of the issuance store; each message names the thing at fault."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promomail.pools.issuing.lease_holder import LeaseHolder


class PromomailError(Exception):
    """Base of every refusal a user can cause; the CLI prints it as one line."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross processes (render workers, store helpers). Many take the
        # parts of their message in __init__, which pickle's default rebuild
        # (the class called with ``args``, the message) cannot call again: the
        # error is rebuilt from its message and attributes instead.
        return (_rebuilt, (type(self), self.args, self.__dict__))


def _rebuilt(
    kind: type[PromomailError], args: tuple[Any, ...], state: dict[str, Any]
) -> PromomailError:
    error = kind.__new__(kind)
    error.args = args
    error.__dict__.update(state)
    return error


class StoreError(PromomailError):
    """The database cannot be reached or used."""


class StoreNotFound(StoreError):
    """A command that only reads names a SQLite store that does not exist.

    Opening it would create an empty one, and a typo in the path would then
    answer "no pools" instead of saying where it looked.
    """

    def __init__(self, path: str) -> None:
        super().__init__(
            f"no store at {path}: nothing was created there "
            "(the first command that writes, such as pool create, makes the store)"
        )
        self.path = path


class DatabaseFailure(StoreError):
    """The database driver failed; translated once, where the store runs SQL.

    The message names the database (never its password) and the driver's
    first line; ``__cause__`` keeps the driver's exception for logs.
    """


class StoreUnavailable(DatabaseFailure):
    """The database cannot be reached, or the connection was lost: try again later."""


class StoreConflict(DatabaseFailure):
    """A constraint of the store refused a write: almost always a concurrent
    writer that got there first, so the caller may look again and retry."""


class NamesSettings(PromomailError):
    """A refusal about settings, named as the library calls them (``issued_valid_days``).

    A front end shows them in its own words, its flags or its fields, with
    :meth:`naming`. The reason places a setting with ``{setting}``; settings
    it does not place lead the message.
    """

    def __init__(self, reason: str, *settings: str) -> None:
        self.reason = reason
        self.settings = settings
        super().__init__(self.naming(str))

    def naming(self, name: Callable[[str], str]) -> str:
        """The message with each setting shown as ``name(setting)``."""
        # Only the named settings' placeholders: a value quoted in the reason
        # may hold braces of its own.
        placed = [s for s in self.settings if "{" + s + "}" in self.reason]
        text = self.reason
        for setting in placed:
            text = text.replace("{" + setting + "}", name(setting))
        leading = [name(s) for s in self.settings if s not in placed]
        return f"{' and '.join(leading)} {text}" if leading else text


class InvalidSetting(NamesSettings):
    """A setting or option value is not valid in itself (as opposed to refused in
    the store's current state); the message says what is allowed."""


class NotFound(PromomailError):
    """What a command or request names does not exist (a pool, mailing, token, redemption)."""


class PoolError(PromomailError):
    """A pool operation is refused (unknown pool, wrong status, bad setting)."""


def did_you_mean(suggestions: Sequence[str]) -> str:
    """`` (did you mean 'a' or 'b'?)``, or nothing without suggestions."""
    if not suggestions:
        return ""
    return f" (did you mean {' or '.join(repr(s) for s in suggestions)}?)"


class PoolNotFound(PoolError, NotFound):
    """No pool has that id; ``suggestions`` are existing ids close to it (a typo)."""

    def __init__(self, pool_id: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(f"pool {pool_id!r} does not exist{did_you_mean(suggestions)}")
        self.pool_id = pool_id
        self.suggestions = list(suggestions)

    def in_store(self, store: str) -> str:
        """The message naming the store looked in: a pool missing from a store
        is most often a store other than the one meant (a path, an unset
        ``PROMOMAIL_DB``). Front ends that must not show where the store is
        (the HTTP API) use the plain message."""
        return (
            f"pool {self.pool_id!r} does not exist in the store {store}"
            f"{did_you_mean(self.suggestions)}"
        )


class PoolExhausted(NamesSettings, PoolError):
    """A pool has fewer codes than a mailing needs; the message names the ways out.

    ``shared``: a multi-use pool, which has no code to share at all.
    """

    def __init__(self, pool_id: str, needed: int, available: int, *, shared: bool = False) -> None:
        self.pool_id = pool_id
        self.needed = needed
        self.available = available
        if shared:
            more = f"upload its shared code (codes upload {pool_id} FILE)"
        else:
            short = needed - available
            more = (
                f"add {short:,} codes or more (codes upload {pool_id} FILE, or codes generate "
                f"{pool_id} {{count}} {short})"
            )
        super().__init__(
            f"pool {pool_id!r} cannot cover the mailing: needed {needed:,}, available "
            f"{available:,}; {more}, or render with {{on_exhausted}} skip (those recipients "
            "are left out) or blank (they get an empty code)",
            *(("on_exhausted",) if shared else ("count", "on_exhausted")),
        )


class ReservationLost(PromomailError):
    """Reserved codes were taken back (voided or reclaimed) before being issued."""


@dataclass(frozen=True)
class LineProblem:
    line: int
    reason: str


class ImportRejected(NamesSettings):
    """An upload had invalid lines and nothing was stored.

    The message ends with the way out, naming the settings that give it
    (``skip_invalid``, and ``whitespace`` when a line was refused for
    whitespace at its ends) as the front end calls them.
    """

    def __init__(
        self,
        source: str,
        problems: list[LineProblem],
        total_problems: int,
        *,
        whitespace: bool = False,
    ) -> None:
        self.source = source
        self.problems = problems
        self.total_problems = total_problems
        self.whitespace = whitespace
        # Here, not at the top: every command imports this module, ``--help`` too.
        from promomail.pools.display import counted

        first = problems[0]
        more = f" (and {counted(total_problems - 1, 'more problem')})" if total_problems > 1 else ""
        self.head = f"{source}, line {first.line}: {first.reason}{more}; nothing was stored"
        remedy = "{skip_invalid} stores the valid lines and reports the rest"
        if whitespace:
            remedy = (
                "{whitespace} strip (trims) or keep (stores it as it is) accepts whitespace "
                f"at either end of a code; {remedy}"
            )
        settings = ("whitespace", "skip_invalid") if whitespace else ("skip_invalid",)
        super().__init__(remedy, *settings)

    def naming(self, name: Callable[[str], str]) -> str:
        # Only the remedy holds placeholders: the file name and the reason
        # quote the user's text, which may hold braces of its own.
        return f"{self.head} ({super().naming(name)})"


class GenerationError(InvalidSetting):
    """A code generation request cannot be met."""


class BatchNotFound(PoolError, NotFound):
    """A pool has no import batch of that number (never uploaded, or another pool's)."""

    def __init__(self, pool_id: str, batch_id: int) -> None:
        super().__init__(f"pool {pool_id!r} has no import batch {batch_id}")
        self.pool_id = pool_id
        self.batch_id = batch_id


class MailingNotFound(NotFound):
    """No mailing has that id; ``suggestions`` are recorded ids close to it (a typo)."""

    def __init__(self, mailing_id: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(f"mailing {mailing_id!r} does not exist{did_you_mean(suggestions)}")
        self.suggestions = list(suggestions)


class RedemptionNotFound(NotFound):
    """A roll-back names a redemption that does not exist (or was already undone).

    ``order`` None: the roll-back asked for the code's redemption made
    without an order.
    """

    def __init__(self, code: str, order: str | None, detail: str = "") -> None:
        which = f"for order {order!r}" if order is not None else "made without an order"
        super().__init__(f"code {code!r} has no redemption {which} to roll back{detail}")
        self.code = code
        self.order = order


class RollbackAmbiguous(PromomailError):
    """A roll-back without an order, of a code redeemed several times without one."""

    def __init__(self, code: str, count: int) -> None:
        super().__init__(
            f"code {code!r} has {count} live redemptions made without an order: "
            "which one to roll back is ambiguous, so none was"
        )
        self.code = code
        self.count = count


#: The prefix of a send run's lease (pools.issuing.leases.SEND_LEASE).
_SEND = "send|"


def _shard_run(shard: str) -> str:
    """``shard 2/4`` of a render, ``send of shard 2/4`` of a send run."""
    if shard.startswith(_SEND):
        return f"send of shard {shard.removeprefix(_SEND)}"
    return f"shard {shard}"


class LeaseLost(PromomailError):
    """This run's lease was taken over (it stalled past its expiry): it must stop."""

    def __init__(self, mailing_id: str, shard: str, holder: LeaseHolder | None) -> None:
        by = f" by {holder.describe()}" if holder else ""
        super().__init__(
            f"mailing {mailing_id!r} {_shard_run(shard)}: this run's lease was taken over{by}; "
            "it stopped without recording anything more"
        )
        self.mailing_id = mailing_id
        self.shard = shard
        self.holder = holder


class LeaseHeld(PromomailError):
    """Another live run holds this mailing and shard."""

    def __init__(self, mailing_id: str, shard: str, holder: LeaseHolder) -> None:
        expires = holder.expires_at.isoformat(sep=" ", timespec="seconds")
        doing = "sent" if shard.startswith(_SEND) else "rendered"
        super().__init__(
            f"mailing {mailing_id!r} shard {shard.removeprefix(_SEND)} is already being {doing} by "
            f"{holder.describe()}; wait for it to finish (if that process died, its lease "
            f"expires at {expires} UTC and the next run takes over)"
        )
        self.mailing_id = mailing_id
        self.shard = shard
        self.holder = holder


class InvalidCursor(PromomailError):
    def __init__(self, cursor: str) -> None:
        super().__init__(f"cursor {cursor!r} is not one this list gave out")


class TokenError(PromomailError):
    """A token command is refused (bad name, name taken, unknown token)."""


class TokenNotFound(TokenError, NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"token {name!r} does not exist")
        self.name = name


class ReturnListError(PromomailError):
    """A recipients or bounce list cannot be read; names the file and line."""


class ExportError(PromomailError):
    """The export cannot be written or its filters name nothing."""


class UnreadableFile(PromomailError):
    """The file as a whole is not a code list (binary, empty, no code column)."""


class SettingLocked(NamesSettings, PoolError):
    """A setting the pool's present state no longer lets change."""


class InvalidPoolSetting(InvalidSetting, PoolError):
    """A pool setting that is not valid in itself: both a pool refusal and a bad setting."""


class UnreadableUpload(PoolError):
    """A file given to an upload is not a code list at all; nothing was stored."""


class SegmentError(InvalidSetting):
    """The segment's filters do not make sense."""


class ReplayedRequest(PromomailError):
    """A signed request whose one-time token was seen before: a replay, refused whole."""

    def __init__(self, provider: str, detail: str) -> None:
        super().__init__(f"{provider}: {detail}")
        self.provider = provider
        self.detail = detail
