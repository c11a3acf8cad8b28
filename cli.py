"""The ``promomail`` command line: the command table and the root group.

The commands themselves live in the :mod:`commands` package, one module per
group or concern; this file holds only what every run needs:

1. the command table — :data:`COMMANDS` maps each top-level name to
   ``"module:attribute"`` and its one-line help. The root group lists them
   from the table and imports a module only when one of its commands runs
   or shows its help, so ``promomail --help`` imports no library code and a
   store command never imports Jinja2. A new command module is one more line
   in the table;
2. the environment variables promomail reads, listed at the end of ``--help``;
3. values — no option or argument takes an empty value;
4. the groups — :class:`PromomailGroup` hands a library refusal to the one
   boundary that makes it a click error (:mod:`commands.errors`), so every
   user error is one ``Error:`` line on stderr and never a traceback.

What the commands share lives in :mod:`commands` too, imported when a command
runs: the run's state and its store (:mod:`commands.state`), the errors
(:mod:`commands.errors`), the output (:mod:`commands.output`) and the shared
parameter types (:mod:`commands.values`). Conventions every command follows:
``--json`` prints exactly one JSON document on stdout (lists are one JSON
array); human output goes to stdout; progress, summaries and warnings go to
stderr.

Imports of the library (and of SQLAlchemy) stay inside the functions that
need them: this module is imported by every run, ``--help`` included.
"""

from __future__ import annotations

import copy
import functools
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from promomail.pools import DEFAULT_URL

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem


class LazyCommand(NamedTuple):
    """Where a top-level command lives, and its help line for the command list."""

    target: str  # "package.module:attribute"
    help: str


#: Every top-level command. The help is the first sentence of the command's
#: docstring (tests/cli/test_cli_lazy.py checks they agree), so listing the
#: commands imports none of them.
COMMANDS: Mapping[str, LazyCommand] = {
    "db": LazyCommand(
        "promomail.commands.db:db",
        "Schema migrations (every other command upgrades automatically).",
    ),
    "pool": LazyCommand(
        "promomail.commands.pools:pool",
        "Create, activate, edit, archive, delete, list and show pools.",
    ),
    "codes": LazyCommand(
        "promomail.commands.codes:codes", "Upload, generate, list and void a pool's codes."
    ),
    "imports": LazyCommand(
        "promomail.commands.codes:imports",
        "A pool's import history: batch, file, format, counts, when.",
    ),
    "check": LazyCommand(
        "promomail.commands.templates:check",
        "Syntax, parts, pools and columns of a template; writes nothing.",
    ),
    "preview": LazyCommand(
        "promomail.commands.templates:preview_command",
        "Render without writing: new codes show as placeholders naming the pool.",
    ),
    "render": LazyCommand(
        "promomail.commands.mailings:render",
        "Render a mailing, issuing each recipient their codes.",
    ),
    "mailings": LazyCommand(
        "promomail.commands.mailings:mailings",
        "Every mailing with its recipients, renders, codes and failures.",
    ),
    "mailing": LazyCommand(
        "promomail.commands.mailings:mailing",
        "One mailing: show it, give back its undelivered codes, or cancel it.",
    ),
    "send": LazyCommand(
        "promomail.commands.delivery:send",
        "Send a rendered mailing through an SMTP relay, recording each message's state.",
    ),
    "deliveries": LazyCommand(
        "promomail.commands.delivery:deliveries",
        "Each message of a mailing with its delivery state and the last answer about it.",
    ),
    "events": LazyCommand(
        "promomail.commands.delivery:events",
        "Delivery events from files: bounce messages and promomail's own JSON Lines.",
    ),
    "customer": LazyCommand(
        "promomail.commands.after_sending:customer",
        "Every code issued to a customer, and the redemptions of their codes.",
    ),
    "segment": LazyCommand(
        "promomail.commands.after_sending:segment_command",
        "Customers by the codes they were issued or still hold; usable as --recipients.",
    ),
    "redeem": LazyCommand(
        "promomail.commands.after_sending:redeem_command",
        "Redeem a code at checkout; exit 1 with the reason when refused.",
    ),
    "unredeem": LazyCommand(
        "promomail.commands.after_sending:unredeem_command",
        "Undo the redemption of CODE by an order that was cancelled or refunded.",
    ),
    "hold": LazyCommand(
        "promomail.commands.holds:hold_command",
        "Hold a single-use code for an order while its payment runs; exit 1 when refused.",
    ),
    "release": LazyCommand(
        "promomail.commands.holds:release_command",
        "End an order's hold of a code at once: the payment failed or the cart was abandoned.",
    ),
    "export": LazyCommand("promomail.commands.after_sending:export", "Export records as files."),
    "serve": LazyCommand(
        "promomail.commands.service:serve_command",
        "Serve the HTTP API and the preview page until SIGTERM or Ctrl-C.",
    ),
    "token": LazyCommand("promomail.commands.service:token", "Bearer tokens of the HTTP service."),
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
            from promomail.commands.errors import one_line

            raise one_line(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            from promomail.commands.errors import one_line

            raise one_line(exc) from exc
        except click.ClickException as exc:
            from promomail.commands.output import printable

            # An error may quote a value (a refused option, a stored name).
            # click types ``message`` Final, but it is a plain instance attribute.
            vars(exc)["message"] = printable(exc.message)
            raise
        except Exception as exc:
            from promomail.commands.errors import translate_error
            from promomail.commands.state import State

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
    from promomail.commands.state import State

    ctx.obj = State(db_url)


def main() -> None:
    cli(prog_name="promomail")


if __name__ == "__main__":
    # ``python cli.py``: run the module the commands import (``promomail.cli``), not a
    # second copy named ``__main__``, so they share one set of group classes.
    from promomail import cli as _self

    _self.main()
