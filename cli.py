"""The ``promomail`` command line: the root group and what every command shares.

The commands themselves live in the :mod:`commands` package, one module per
group or concern; this file holds only what they all use:

1. the command table — :data:`COMMANDS` maps each top-level name to
   ``"module:attribute"`` and its one-line help. The root group lists them
   from the table and imports a module only when one of its commands runs
   or shows its help, so ``promomail --help`` imports no library code and a
   store command never imports Jinja2. A new command module is one more line
   in the table;
2. errors — library refusals become ``click.ClickException`` subclasses in
   one place (:meth:`PromomailGroup.invoke`), so every user error is one
   ``Error:`` line on stderr with exit status 1 and never a traceback;
3. values — no option or argument takes an empty value;
4. state — the engine is opened lazily on first use (``--help`` never touches
   a database) and disposed with the root context;
5. output — JSON documents, aligned tables, key/value blocks and the timed
   summary line of long work (its progress bar: :mod:`commands.progress`).

Conventions every command follows: ``--json`` prints exactly one JSON
document on stdout (lists are one JSON array); human output goes to stdout;
progress, summaries and warnings go to stderr.

Imports of the library (and of SQLAlchemy) stay inside the functions that
need them: this module is imported by every run, ``--help`` included.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import click

from pools import DEFAULT_URL, ImportRejected, NamesSettings, PromomailError, StoreNotFound

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem
    from sqlalchemy import Engine

    from pools import LowStockAlert

STDIN_NAME = "<stdin>"


class LazyCommand(NamedTuple):
    """Where a top-level command lives, and its help line for the command list."""

    target: str  # "package.module:attribute"
    help: str


#: Every top-level command. The help is the first sentence of the command's
#: docstring (tests/cli/test_cli_lazy.py checks they agree), so listing the
#: commands imports none of them.
COMMANDS: Mapping[str, LazyCommand] = {
    "db": LazyCommand(
        "commands.db:db", "Schema migrations (every other command upgrades automatically)."
    ),
    "pool": LazyCommand(
        "commands.pools:pool", "Create, activate, edit, archive, delete, list and show pools."
    ),
    "codes": LazyCommand("commands.codes:codes", "Upload, generate, list and void a pool's codes."),
    "imports": LazyCommand(
        "commands.codes:imports", "A pool's import history: batch, file, format, counts, when."
    ),
    "check": LazyCommand(
        "commands.templates:check",
        "Syntax, parts, pools and columns of a template; writes nothing.",
    ),
    "preview": LazyCommand(
        "commands.templates:preview_command",
        "Render without writing: new codes show as placeholders naming the pool.",
    ),
    "render": LazyCommand(
        "commands.mailings:render", "Render a mailing, issuing each recipient their codes."
    ),
    "mailings": LazyCommand(
        "commands.mailings:mailings",
        "Every mailing with its recipients, renders, codes and failures.",
    ),
    "mailing": LazyCommand(
        "commands.mailings:mailing",
        "One mailing: show it, give back its undelivered codes, or cancel it.",
    ),
    "send": LazyCommand(
        "commands.delivery:send",
        "Send a rendered mailing through an SMTP relay, recording each message's state.",
    ),
    "deliveries": LazyCommand(
        "commands.delivery:deliveries",
        "Each message of a mailing with its delivery state and the last answer about it.",
    ),
    "events": LazyCommand(
        "commands.delivery:events",
        "Delivery events from files: bounce messages and promomail's own JSON Lines.",
    ),
    "customer": LazyCommand(
        "commands.after_sending:customer",
        "Every code issued to a customer, and the redemptions of their codes.",
    ),
    "segment": LazyCommand(
        "commands.after_sending:segment_command",
        "Customers by the codes they were issued or still hold; usable as --recipients.",
    ),
    "redeem": LazyCommand(
        "commands.after_sending:redeem_command",
        "Redeem a code at checkout; exit 1 with the reason when refused.",
    ),
    "unredeem": LazyCommand(
        "commands.after_sending:unredeem_command",
        "Undo the redemption of CODE by an order that was cancelled or refunded.",
    ),
    "hold": LazyCommand(
        "commands.holds:hold_command",
        "Hold a single-use code for an order while its payment runs; exit 1 when refused.",
    ),
    "release": LazyCommand(
        "commands.holds:release_command",
        "End an order's hold of a code at once: the payment failed or the cart was abandoned.",
    ),
    "export": LazyCommand("commands.after_sending:export", "Export records as files."),
    "serve": LazyCommand(
        "commands.service:serve_command",
        "Serve the HTTP API and the preview page until SIGTERM or Ctrl-C.",
    ),
    "token": LazyCommand("commands.service:token", "Bearer tokens of the HTTP service."),
}


class EnvironmentVariable(NamedTuple):
    """A variable promomail reads, which commands read it, and what it does."""

    name: str
    #: Which commands read it.
    read_by: str
    does: str


#: Every environment variable promomail reads: the one list. ``promomail --help``
#: ends with it, the README repeats it as a table, and tests/cli/test_cli_help.py
#: checks that the code reads exactly these.
ENVIRONMENT: tuple[EnvironmentVariable, ...] = (
    EnvironmentVariable(
        "PROMOMAIL_DB",
        "every command",
        "SQLAlchemy URL of the issuance store (default sqlite:///promomail.db); --db overrides it.",
    ),
    EnvironmentVariable(
        "PROMOMAIL_FROM",
        "render (.eml), send",
        "The From of every message, one address (default: promomail <noreply@localhost>).",
    ),
    EnvironmentVariable(
        "PROMOMAIL_SMTP_URL",
        "send, low-stock notices",
        "The SMTP relay: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered; "
        "?starttls=require to insist), or smtps:// for TLS from the start; send's --smtp "
        "overrides it.",
    ),
    EnvironmentVariable(
        "PROMOMAIL_SMTP_CA",
        "send, low-stock notices",
        "A file of CA certificates to verify the relay with (default: the system's).",
    ),
    EnvironmentVariable(
        "PROMOMAIL_WEBHOOK_ALLOW_PRIVATE",
        "pool create/edit, low-stock notices",
        "Let low-stock webhooks reach private addresses: 1 for all, or networks "
        "(10.0.0.0/8,127.0.0.1).",
    ),
    EnvironmentVariable(
        "PROMOMAIL_SNS_TOPICS",
        "serve",
        "Amazon SES events: the SNS topic ARNs accepted, comma-separated.",
    ),
    EnvironmentVariable(
        "PROMOMAIL_SNS_CERT_URL",
        "serve",
        "Where SNS signing certificates may come from, a regular expression "
        "(default: https on sns.REGION.amazonaws.com).",
    ),
    EnvironmentVariable(
        "PROMOMAIL_SENDGRID_PUBLIC_KEY",
        "serve",
        "SendGrid events: the verification key of the Signed Event Webhook (base64).",
    ),
    EnvironmentVariable(
        "PROMOMAIL_MAILGUN_SIGNING_KEY",
        "serve",
        "Mailgun events: the HTTP webhook signing key.",
    ),
    EnvironmentVariable(
        "PROMOMAIL_POSTMARK_AUTH",
        "serve",
        "Postmark events: USER:PASSWORD of the webhook URL's basic auth.",
    ),
    EnvironmentVariable(
        "TMPDIR",
        "render (to stdout)",
        "Where render keeps its workers' output before writing it to stdout (default /tmp).",
    ),
)

# ---------------------------------------------------------------------------
# Errors: the one boundary where library refusals become click errors
# ---------------------------------------------------------------------------


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
            from pools import told_where

            return CommandFailed(told_where(exc, state.engine))
        return CommandFailed(str(exc))
    return None


# ---------------------------------------------------------------------------
# Values: no option or argument takes an empty one
# ---------------------------------------------------------------------------


class RefusesEmpty(click.ParamType[Any]):
    """Mixed in front of a parameter's own type: an empty value is a usage error.

    ``--shard "$SHARD"`` with the variable unset must not silently mean
    "every recipient", nor ``--mailing ""`` nor ``--out ""`` anything else:
    a value typed (or set in the environment) that is empty or only
    whitespace is refused, naming the option. Defaults are the program's own
    and pass. Being mixed into a subclass of the original type keeps what
    click derives from it: help ranges, choices, completion.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip() and _given_by_user(param, ctx):
            optional = isinstance(param, click.Option) and not param.required
            hint = " (leave the option out instead)" if optional else ""
            self.fail(f"an empty value is not allowed{hint}", param, ctx)
        return super().convert(value, param, ctx)


_USER_SOURCES = (
    click.core.ParameterSource.COMMANDLINE,
    click.core.ParameterSource.ENVIRONMENT,
    click.core.ParameterSource.PROMPT,
)


def _given_by_user(param: click.Parameter | None, ctx: click.Context | None) -> bool:
    if param is None or ctx is None or param.name is None:
        return True
    source = ctx.get_parameter_source(param.name)
    return source is None or source in _USER_SOURCES


@functools.cache
def _refusing_class(base: type[click.ParamType[Any]]) -> type[click.ParamType[Any]]:
    return type(f"NonEmpty{base.__name__}", (RefusesEmpty, base), {})


def takes_value(param: click.Parameter) -> bool:
    """Whether the parameter reads a value (flags and counters do not)."""
    if isinstance(param, click.Option):
        return not (param.is_flag or param.count)
    return True


def refuse_empty_values(command: click.Command) -> None:
    """Make every value-taking parameter of the command (and its subcommands) refuse ''."""
    for param in command.params:
        if takes_value(param) and not isinstance(param.type, RefusesEmpty):
            refusing = copy.copy(param.type)
            refusing.__class__ = _refusing_class(type(param.type))
            param.type = refusing
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            refuse_empty_values(sub)


class LibraryValue(click.ParamType[Any]):
    """A value parsed by the library's own parser; its refusal becomes a usage error."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self.parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        if ctx is not None and ctx.resilient_parsing:
            # Shell completion parses the line without running anything: the
            # value is never used, and parsing it would import the library.
            return value
        try:
            return self.parse(value)
        except PromomailError as exc:
            self.fail(str(exc), param, ctx)


#: A command's line in its group's help is its first sentence, whole: click
#: would cut it with "..." to fit one line; the help formatter wraps it instead.
WHOLE_SENTENCE = 10_000


def command_rows(ctx: click.Context, group: click.Group) -> list[tuple[str, str]]:
    """(name, first sentence of its help) of each visible command of ``group``."""
    rows = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            rows.append((name, command.get_short_help_str(WHOLE_SENTENCE)))
    return rows


class PromomailGroup(click.Group):
    """Every group of the CLI: refuses empty values and translates refusals.

    Commands and groups added to it, by decorator or ``add_command``, get
    the empty-value rule at that moment, whatever their class; subgroups
    made with ``.group()`` are PromomailGroups too.
    """

    group_class = type

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        refuse_empty_values(self)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        refuse_empty_values(cmd)
        super().add_command(cmd, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = command_rows(ctx, self)
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # Once more over the whole tree before a run: also covers a command
        # added later to a subgroup of another class.
        if parent is None:
            refuse_empty_values(self)
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            # The root's own options ("promomail --bogus"); a subcommand's
            # are parsed inside its parent's invoke, below.
            raise one_line(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise one_line(exc) from exc
        except click.ClickException as exc:
            # An error may quote a value (a refused option, a stored name).
            # click types ``message`` Final, but it is a plain instance attribute.
            vars(exc)["message"] = printable(exc.message)
            raise
        except Exception as exc:
            state = ctx.obj if isinstance(ctx.obj, State) else None
            # The innermost group answers first: its subcommand ran and knows its options.
            name = ctx.invoked_subcommand
            command = self.get_command(ctx, name) if name else None
            translated = translate_error(exc, state, command)
            if translated is None:
                raise
            raise translated from exc


class LazyGroup(PromomailGroup):
    """The root group: its commands are imported on first use, from a table.

    Listing them (``--help``, the tests that walk the command tree) goes
    through :meth:`list_commands` and :meth:`get_command`, as click does;
    the help listing and the completion of a command name read the table's
    help lines instead of importing every module.
    """

    def __init__(
        self, *args: Any, lazy_commands: Mapping[str, LazyCommand] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            self.add_command(_load(self.lazy_commands[cmd_name].target), cmd_name)
        return super().get_command(ctx, cmd_name)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """The command names starting with ``incomplete``, from the table: none is imported."""
        from click.shell_completion import CompletionItem

        items = []
        for name in self.list_commands(ctx):
            if not name.startswith(incomplete):
                continue
            loaded = self.commands.get(name)
            if loaded is None:
                loaded = click.Command(name, help=self.lazy_commands[name].help)
            elif loaded.hidden:
                continue
            items.append(CompletionItem(name, help=loaded.get_short_help_str()))
        # The group's own options (--db, --help, --version), as click completes them.
        items.extend(click.Command.shell_complete(self, ctx, incomplete))
        return items

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            loaded = self.commands.get(name)
            if loaded is not None:
                if loaded.hidden:
                    continue
                rows.append((name, loaded.get_short_help_str(WHOLE_SENTENCE)))
            else:
                # The table's line, as a loaded command's help would give it.
                stand_in = click.Command(name, help=self.lazy_commands[name].help)
                rows.append((name, stand_in.get_short_help_str(WHOLE_SENTENCE)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Every variable promomail reads, from the one list the README's table repeats.
        with formatter.section("Environment variables"):
            formatter.write_dl([(v.name, f"{v.does} [{v.read_by}]") for v in ENVIRONMENT])
        super().format_epilog(ctx, formatter)


def _load(target: str) -> click.Command:
    module_name, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command


# ---------------------------------------------------------------------------
# State: the store, opened on first use
# ---------------------------------------------------------------------------


@dataclass
class State:
    url: str
    engine: Engine | None = None
    #: Set once a command has already reported an upload's problems (``--json``).
    problems_reported: bool = False


@contextmanager
def _disposing(engine: Engine) -> Iterator[Engine]:
    try:
        yield engine
    finally:
        engine.dispose()


def get_state(ctx: click.Context) -> State:
    state = ctx.find_root().obj
    assert isinstance(state, State)
    return state


def get_engine(ctx: click.Context, *, migrate: bool = True, create: bool = True) -> Engine:
    """The store's engine, opened (and migrated) on first use in this run.

    A command that only reads passes ``create=False``: a SQLite store that
    does not exist is then an error naming its path, never a new empty file.
    """
    from pools import StoreConfig, open_engine

    state = get_state(ctx)
    if state.engine is None:
        engine = open_engine(StoreConfig(state.url), migrate=migrate, create=create)
        state.engine = ctx.find_root().with_resource(_disposing(engine))
    return state.engine


def complete_pool_id(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of a pool id: the store's pools (``--db`` or PROMOMAIL_DB), by id.

    Runs only when a pool id is being completed: the store is opened here,
    read, and closed; completing a command or an option never opens it.
    """
    from click.shell_completion import CompletionItem

    from pools import pool_choices

    url = ctx.find_root().params.get("db_url") or DEFAULT_URL
    return [CompletionItem(pool_id, help=name) for pool_id, name in pool_choices(url, incomplete)]


# ---------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def emit_json(document: Any) -> None:
    """One JSON document on stdout: exact, and with nothing in it a terminal would run."""
    text = json.dumps(document, indent=2, ensure_ascii=False, default=_json_default)
    from pools import json_for_terminal

    click.echo(json_for_terminal(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        from pools.store.clock import iso_seconds

        return iso_seconds(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def printable(text: str, *, layout: bool = False) -> str:
    """``text`` with every terminal control shown as an escape (see :mod:`pools.display`).

    Every human line the commands print goes through here: through
    :func:`say`, :func:`note`, :func:`cell` (tables and fields) or an
    ``Error:`` line. ``--json`` documents stay exact (:func:`emit_json`).
    """
    from pools import printable as shown

    return shown(text, layout=layout)


def say(text: str = "", *, layout: bool = False) -> None:
    """A line of a command's human output on stdout; ``layout`` keeps its own line breaks."""
    click.echo(printable(text, layout=layout))


def note(message: str) -> None:
    """A line for the person at the terminal: stderr, never mixed with results."""
    click.echo(printable(message), err=True)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return printable(str(value))


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "(none)"
) -> None:
    """An aligned table; numeric columns are right-aligned."""
    raw = [list(row) for row in rows]
    if not raw:
        click.echo(empty)
        return
    # A column of only empty cells ("-") is not numeric: it stays left-aligned.
    numeric = [
        any(isinstance(row[i], int) and not isinstance(row[i], bool) for row in raw)
        and all(isinstance(row[i], int) and not isinstance(row[i], bool) for row in raw if row[i])
        for i in range(len(headers))
    ]
    text = [[cell(v) for v in row] for row in raw]
    widths = [max(len(h), *(len(row[i]) for row in text)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    click.echo(line(headers))
    for row in text:
        click.echo(line(row))


def print_fields(pairs: Sequence[tuple[str, Any]], *, indent: str = "  ") -> None:
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        click.echo(f"{indent}{key.ljust(width)}  {cell(value)}".rstrip())


def stdin_is_terminal() -> bool:
    """Whether a person can answer a confirmation prompt."""
    return sys.stdin.isatty()


def plural(count: int, noun: str) -> str:
    """``1 code``, ``2 codes`` (see :func:`pools.display.counted`)."""
    from pools import counted

    return counted(count, noun)


def summary(verb: str, count: int, detail: str, seconds: float, rate_of: int) -> str:
    """``Uploaded 1,000 codes (3 duplicates, 0 rejected) in 4.2 s — 238 codes/s``."""
    rate = rate_of / seconds if seconds > 0 else float(rate_of)
    shown = f"{seconds:.1f}" if seconds >= 1 else f"{seconds:.2f}"
    detail = f" ({detail})" if detail else ""
    return f"{verb} {plural(count, 'code')}{detail} in {shown} s — {round_rate(rate):,} codes/s"


def round_rate(rate: float) -> int:
    """Three significant figures: a rate is an estimate, not a count."""
    if rate < 1000:
        return round(rate)
    digits = len(str(int(rate))) - 3
    return int(round(rate, -digits))


def warn_low_stock(alerts: Sequence[LowStockAlert]) -> None:
    for alert in alerts:
        for line in alert.warnings():
            note(f"Warning: {line}")


# ---------------------------------------------------------------------------
# The root group
# ---------------------------------------------------------------------------


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="promomail", prog_name="promomail")
@click.option(
    "--db",
    "db_url",
    envvar="PROMOMAIL_DB",
    default=DEFAULT_URL,
    show_default=True,
    metavar="URL",
    help="SQLAlchemy URL of the issuance store (env PROMOMAIL_DB).",
)
@click.pass_context
def cli(ctx: click.Context, db_url: str) -> None:
    """Mass mailings from Jinja2 templates that hand every recipient a unique promo code."""
    ctx.obj = State(db_url)


def main() -> None:
    cli(prog_name="promomail")


if __name__ == "__main__":
    # ``python cli.py``: run the module the commands import (``cli``), not a
    # second copy named ``__main__``, so they share one State class.
    import cli as _self

    _self.main()
