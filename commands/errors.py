"""The one boundary where library refusals become click errors.

Every user error is one ``Error:`` line on stderr, with exit status 1 (a
refusal) or 2 (a usage error), never a traceback: the root group hands what
a command raised to :func:`translate_error`, and a usage error to
:func:`one_line`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any

import click

from promomail.commands.output import plural, printable
from promomail.commands.state import State
from promomail.pools import ImportRejected, NamesSettings, PromomailError, StoreNotFound


class CommandFailed(click.ClickException):
    """A refused or failed operation: ``Error: …`` on stderr, exit status 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, whatever the underlying message looked like, and nothing
        # in it a terminal would run (it may quote stored values).
        one_line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
        super().__init__(printable(one_line))


class UploadRejected(CommandFailed):
    """An all-or-nothing upload with invalid lines: every problem, then the error."""

    def __init__(
        self, error: ImportRejected, *, list_problems: bool, command: click.Command | None = None
    ) -> None:
        super().__init__(error.naming(flags_of(command)))
        self.error = error
        self.list_problems = list_problems

    def show(self, file: IO[Any] | None = None) -> None:
        if self.list_problems:
            out = file if file is not None else sys.stderr
            source = printable(self.error.source)
            for problem in self.error.problems:
                click.echo(f"{source}, line {problem.line}: {printable(problem.reason)}", file=out)
            unlisted = self.error.total_problems - len(self.error.problems)
            if unlisted > 0:
                more = plural(unlisted, "more problem")
                click.echo(f"{source}: … and {more}", file=out)
        super().show(file)


class OneLineUsageError(click.UsageError):
    """A usage error as SPEC 1 promises it: one ``Error:`` line (exit status 2).

    click prints the usage, a hint and the error on four lines; this says the
    same on one: what is wrong, the command's usage, and where its help is.
    """

    def __init__(self, error: click.UsageError) -> None:
        # format_message names the parameter ("Invalid value for '--limit': …").
        message = "; ".join(
            part.strip() for part in error.format_message().splitlines() if part.strip()
        )
        super().__init__(printable(message), error.ctx)

    def show(self, file: IO[Any] | None = None) -> None:
        line = f"Error: {self.message}"
        if self.ctx is not None:
            if not line.endswith((".", "?", "!")):
                line += "."
            usage = " ".join(self.ctx.get_usage().split())
            line += f" {usage} (more: {self.ctx.command_path} --help)"
        click.echo(line, file=file, err=True)


def one_line(error: click.UsageError) -> click.UsageError:
    """``error`` shown on one line; help asked for by giving no arguments stays help."""
    if isinstance(error, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return error
    if isinstance(error, click.NoSuchOption) and error.option_name == "--db":
        return OneLineUsageError(misplaced_db(error))
    return OneLineUsageError(error)


def misplaced_db(error: click.NoSuchOption) -> click.UsageError:
    """``promomail pool list --db URL``: the store is the root's option, so say where it goes."""
    root, _, command = (error.ctx.command_path if error.ctx else "promomail").partition(" ")
    where = f"{root} --db URL {command} …" if command else f"{root} --db URL COMMAND …"
    return click.UsageError(
        f"--db goes before the command: {where} (or set PROMOMAIL_DB)", error.ctx
    )


def cli_flag(setting: str, command: click.Command | None = None) -> str:
    """The option that carries a library setting: the command's parameter of
    that name (``--mailing`` for ``mailing_id``), else ``--`` and the name."""
    for param in command.params if command is not None else ():
        if param.name == setting and isinstance(param, click.Option):
            return max(param.opts, key=len)
    return "--" + setting.replace("_", "-")


def flags_of(command: click.Command | None) -> Callable[[str], str]:
    """A setting's name as ``command``'s option, for :meth:`NamesSettings.naming`."""
    return lambda setting: cli_flag(setting, command)


def misused_options(exc: NamesSettings, ctx: click.Context) -> click.UsageError:
    """A setting the library refused as a wrong combination of this command's options."""
    return click.UsageError(exc.naming(flags_of(ctx.command)), ctx)


def translate_error(
    exc: Exception, state: State | None, command: click.Command | None = None
) -> click.ClickException | None:
    """The click error to show for a library or database failure; None for any other."""
    if isinstance(exc, ImportRejected):
        listed = state is None or not state.problems_reported
        return UploadRejected(exc, list_problems=listed, command=command)
    if isinstance(exc, NamesSettings):
        return CommandFailed(exc.naming(flags_of(command)))
    if isinstance(exc, StoreNotFound):
        return CommandFailed(f"{exc}; check --db or PROMOMAIL_DB")
    if isinstance(exc, PromomailError):
        if state is not None and state.engine is not None:
            from promomail.pools import told_where

            return CommandFailed(told_where(exc, state.engine))
        return CommandFailed(str(exc))
    return None
