"""The ``promomail`` command line: parse, call the library, print.

Layout, so later command groups slot in without touching the rest:

1. errors — library refusals become ``click.ClickException`` subclasses in
   one place (:class:`PromomailGroup.invoke`), so every user error is one
   ``Error:`` line on stderr with exit status 1 and never a traceback;
2. state — the engine is opened lazily on first use (``--help`` never touches
   a database) and disposed with the root context;
3. output — JSON documents, aligned tables, key/value blocks, progress and
   the timed summary line of long work;
4. one section per command group: ``db``, ``pool``, ``codes``/``imports``.

Conventions every command follows: ``--json`` prints exactly one JSON
document on stdout (lists are one JSON array); human output goes to stdout;
progress, summaries and warnings go to stderr.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import click
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from pools.code_files import FileFormat, Whitespace, format_for
from pools.code_listing import CodeEntry, CodeState, list_codes
from pools.customers import customer_history
from pools.db import (
    DEFAULT_URL,
    StoreConfig,
    current_revision,
    first_line,
    head_revision,
    open_engine,
    upgrade,
)
from pools.errors import ImportRejected, InvalidSetting, PromomailError
from pools.export import export_issuances
from pools.generation import DEFAULT_ALPHABET, DEFAULT_LENGTH, CodeSpec, generate_codes
from pools.imports import (
    ImportRecord,
    ImportReport,
    Upload,
    import_history,
    pool_document,
    rejected_document,
    upload_codes,
    upload_document,
)
from pools.leases import DEFAULT_LEASE_SECONDS
from pools.mailings import MailingView, list_mailings, show_mailing
from pools.notifications import LowStockAlert, check_low_stock
from pools.pool_admin import (
    PoolSettings,
    PoolView,
    activate_pool,
    archive_pool,
    create_pool,
    delete_pool,
    edit_pool,
    list_pools,
    setting_changes,
    show_pool,
)
from pools.redemption import redeem, unredeem
from pools.returns import (
    EMAIL_COLUMNS,
    ID_COLUMNS,
    ReturnReport,
    cancel_mailing,
    match_addresses,
    read_return_list,
    return_codes,
)
from pools.segments import SegmentFormat, segment, write_segment
from pools.tokens import Scope, create_token, list_tokens, revoke_token
from pools.voiding import void_batch
from templating.checking import check_template, preview, preview_recipients
from templating.mailing import CHUNK_SIZE, RenderRequest, RenderSummary, render_mailing
from templating.outputs import OutputFormat, OutputTarget
from templating.recipients import Shard, read_recipients
from templating.run_options import (
    parse_chunk_size,
    parse_seconds,
    parse_shard,
    parse_workers,
)
from templating.sources import OnExhausted

STDIN_NAME = "<stdin>"

# ---------------------------------------------------------------------------
# Errors: the one boundary where library refusals become click errors
# ---------------------------------------------------------------------------


class CommandFailed(click.ClickException):
    """A refused or failed operation: ``Error: …`` on stderr, exit status 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, whatever the underlying message looked like.
        super().__init__("; ".join(part.strip() for part in message.splitlines() if part.strip()))


class UploadRejected(CommandFailed):
    """An all-or-nothing upload with invalid lines: every problem, then the error."""

    def __init__(self, error: ImportRejected, *, list_problems: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.list_problems = list_problems

    def show(self, file: IO[Any] | None = None) -> None:
        if self.list_problems:
            out = file if file is not None else sys.stderr
            for problem in self.error.problems:
                click.echo(f"{self.error.source}, line {problem.line}: {problem.reason}", file=out)
            unlisted = self.error.total_problems - len(self.error.problems)
            if unlisted > 0:
                click.echo(f"{self.error.source}: … and {unlisted:,} more problems", file=out)
        super().show(file)


def translate_error(exc: Exception, state: State | None) -> click.ClickException:
    """The click error to show for a library or database failure."""
    if isinstance(exc, ImportRejected):
        listed = state is None or not state.problems_reported
        return UploadRejected(exc, list_problems=listed)
    if isinstance(exc, DBAPIError):
        where = state.display_url if state is not None else "the database"
        return CommandFailed(f"database {where}: {first_line(exc.orig)}")
    return CommandFailed(str(exc))


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
        try:
            return self.parse(value)
        except PromomailError as exc:
            self.fail(str(exc), param, ctx)


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
        return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PromomailError, DBAPIError) as exc:
            state = ctx.obj if isinstance(ctx.obj, State) else None
            raise translate_error(exc, state) from exc


# ---------------------------------------------------------------------------
# State: the store, opened on first use
# ---------------------------------------------------------------------------


@dataclass
class State:
    url: str
    engine: Engine | None = None
    #: Set once a command has already reported an upload's problems (``--json``).
    problems_reported: bool = False

    @property
    def display_url(self) -> str:
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except ArgumentError:
            return self.url


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


def get_engine(ctx: click.Context, *, migrate: bool = True) -> Engine:
    """The store's engine, opened (and migrated) on first use in this run."""
    state = get_state(ctx)
    if state.engine is None:
        engine = open_engine(StoreConfig(state.url), migrate=migrate)
        state.engine = ctx.find_root().with_resource(_disposing(engine))
    return state.engine


# ---------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def note(message: str) -> None:
    """A line for the person at the terminal: stderr, never mixed with results."""
    click.echo(message, err=True)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


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


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def stdin_is_terminal() -> bool:
    """Whether a person can answer a confirmation prompt."""
    return sys.stdin.isatty()


class Progress:
    """A one-line indicator on stderr, redrawn at most ten times a second."""

    def __init__(
        self, label: str, total: int | None = None, show: Callable[[int], str] | None = None
    ) -> None:
        self.label = label
        self.total = total
        self.show = show or _size
        self.done = 0
        self._drawn = 0.0
        self._width = 0

    def advance(self, amount: int) -> None:
        self.done += amount
        now = time.monotonic()
        if now - self._drawn >= 0.1:
            self._drawn = now
            self._draw()

    def _draw(self) -> None:
        size = self.show(self.done)
        if self.total:
            percent = min(100, self.done * 100 // self.total)
            text = f"{self.label}: {percent:3d}% ({size} of {self.show(self.total)})"
        else:
            text = f"{self.label}: {size}"
        self._width = max(self._width, len(text))
        click.echo("\r" + text.ljust(self._width), err=True, nl=False)

    def finish(self) -> None:
        if self._width:
            click.echo("\r" + " " * self._width + "\r", err=True, nl=False)


def _size(n_bytes: int) -> str:
    value = float(n_bytes)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


class MeteredReader:
    """A binary stream that reports how much of it was read."""

    def __init__(self, stream: BinaryIO, progress: Progress) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._progress.advance(len(data))
        return data


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def summary(verb: str, count: int, detail: str, seconds: float, rate_of: int) -> str:
    """``Uploaded 1,000 codes (3 duplicates, 0 rejected) in 4.2 s — 238 codes/s``."""
    rate = rate_of / seconds if seconds > 0 else float(rate_of)
    shown = f"{seconds:.1f}" if seconds >= 1 else f"{seconds:.2f}"
    detail = f" ({detail})" if detail else ""
    return f"{verb} {plural(count, 'code')}{detail} in {shown} s — {_round_rate(rate):,} codes/s"


def _round_rate(rate: float) -> int:
    """Three significant figures: a rate is an estimate, not a count."""
    if rate < 1000:
        return round(rate)
    digits = len(str(int(rate))) - 3
    return int(round(rate, -digits))


# ---------------------------------------------------------------------------
# The root group
# ---------------------------------------------------------------------------


@click.group(cls=PromomailGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


# ---------------------------------------------------------------------------
# db: schema migrations for operators
# ---------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Schema migrations (every other command upgrades automatically)."""


@db.command("upgrade")
@json_option
@click.pass_context
def db_upgrade(ctx: click.Context, as_json: bool) -> None:
    """Bring the database schema to the newest revision."""
    engine = get_engine(ctx, migrate=False)
    before = current_revision(engine)
    after = upgrade(engine)
    if as_json:
        emit_json({"from": before, "to": after, "changed": before != after})
    elif before == after:
        click.echo(f"Schema already at the newest revision {after}.")
    else:
        click.echo(f"Schema upgraded from {before or '(empty)'} to {after}.")


@db.command("current")
@json_option
@click.pass_context
def db_current(ctx: click.Context, as_json: bool) -> None:
    """Show the schema revision of the database and the newest one."""
    current = current_revision(get_engine(ctx, migrate=False))
    head = head_revision()
    if as_json:
        emit_json({"current": current, "head": head, "up_to_date": current == head})
        return
    status = "up to date" if current == head else "run 'promomail db upgrade'"
    click.echo(f"current  {current or '(empty database)'}")
    click.echo(f"head     {head}  ({status})")


# ---------------------------------------------------------------------------
# pool: life cycle of pools
# ---------------------------------------------------------------------------


@cli.group()
def pool() -> None:
    """Create, activate, edit, archive, delete, list and show pools."""


def _report_pool(verb: str, view: PoolView, as_json: bool) -> None:
    """What a pool command did: the pool as JSON, or one line."""
    if as_json:
        emit_json(view.as_dict())
    else:
        click.echo(f"{verb} pool {view.id} ({view.name!r}, {view.status}, {view.settings.mode}).")


@pool.command("create")
@click.argument("name")
@click.option("--id", "pool_id", metavar="ID", help="Pool id (default: a slug of NAME).")
@click.option("--description", metavar="TEXT", help="What the pool is for (needed to activate).")
@click.option("--multi-use", is_flag=True, help="One shared code, never consumed.")
@click.option("--require-issued", is_flag=True, help="Redeemable only after being issued.")
@click.option("--issued-valid-days", type=int, metavar="N", help="Validity after issue.")
@click.option("--low-stock", type=int, metavar="N", help="Warn below N available codes.")
@click.option("--notify-url", metavar="URL", help="Webhook for low-stock notices.")
@click.option("--notify-email", metavar="ADDR", help="E-mail address for low-stock notices.")
@click.option("--per-customer", type=int, metavar="N", help="Each customer holds N codes.")
@click.option("--activate", is_flag=True, help="Activate right away.")
@json_option
@click.pass_context
def pool_create(
    ctx: click.Context,
    name: str,
    pool_id: str | None,
    description: str | None,
    multi_use: bool,
    require_issued: bool,
    issued_valid_days: int | None,
    low_stock: int | None,
    notify_url: str | None,
    notify_email: str | None,
    per_customer: int | None,
    activate: bool,
    as_json: bool,
) -> None:
    """Create a pool named NAME, in status draft unless --activate."""
    settings = PoolSettings.from_options(
        name,
        description=description,
        multi_use=multi_use,
        require_issued=require_issued,
        issued_valid_days=issued_valid_days,
        per_customer=per_customer,
        low_stock=low_stock,
        notify_url=notify_url,
        notify_email=notify_email,
    )
    view = create_pool(get_engine(ctx), settings, pool_id=pool_id, activate=activate)
    _report_pool("Created", view, as_json)


@pool.command("activate")
@click.argument("pool_id", metavar="ID")
@json_option
@click.pass_context
def pool_activate(ctx: click.Context, pool_id: str, as_json: bool) -> None:
    """Move a draft pool to active; it then issues codes."""
    view = activate_pool(get_engine(ctx), pool_id)
    _report_pool("Activated", view, as_json)


@pool.command("edit")
@click.argument("pool_id", metavar="ID")
@click.option("--name", help="New display name.")
@click.option("--description", metavar="TEXT", help="New description.")
@click.option("--low-stock", type=int, metavar="N", help="Warn below N available codes.")
@click.option("--notify-url", metavar="URL", help="Webhook for low-stock notices.")
@click.option("--notify-email", metavar="ADDR", help="Address for low-stock notices.")
@click.option(
    "--clear",
    "cleared",
    multiple=True,
    type=click.Choice(["description", "notify-url", "notify-email"]),
    help="Remove this setting (repeat for several).",
)
@click.option("--issued-valid-days", type=int, metavar="N", help="Validity after issue.")
@click.option(
    "--multi-use/--single-use", default=None, help="Mode (only while the pool is a draft)."
)
@click.option(
    "--require-issued/--no-require-issued",
    default=None,
    help="Redeemable only after issue (only while a draft).",
)
@click.option("--per-customer", type=int, metavar="N", help="Codes per customer (draft only).")
@json_option
@click.pass_context
def pool_edit(
    ctx: click.Context,
    pool_id: str,
    name: str | None,
    description: str | None,
    low_stock: int | None,
    notify_url: str | None,
    notify_email: str | None,
    issued_valid_days: int | None,
    multi_use: bool | None,
    require_issued: bool | None,
    per_customer: int | None,
    cleared: tuple[str, ...],
    as_json: bool,
) -> None:
    """Change a pool's settings; mode flags are fixed once the pool is active."""
    try:
        changes = setting_changes(
            name=name,
            description=description,
            low_stock=low_stock,
            notify_url=notify_url,
            notify_email=notify_email,
            issued_valid_days=issued_valid_days,
            multi_use=multi_use,
            require_issued=require_issued,
            per_customer=per_customer,
            cleared=[option.replace("-", "_") for option in cleared],
        )
    except InvalidSetting as exc:
        raise click.UsageError(str(exc), ctx) from exc
    view = edit_pool(get_engine(ctx), pool_id, **changes)
    _report_pool("Edited", view, as_json)


@pool.command("archive")
@click.argument("pool_id", metavar="ID")
@json_option
@click.pass_context
def pool_archive(ctx: click.Context, pool_id: str, as_json: bool) -> None:
    """Stop a pool issuing codes; its history stays."""
    view = archive_pool(get_engine(ctx), pool_id)
    _report_pool("Archived", view, as_json)


@pool.command("delete")
@click.argument("pool_id", metavar="ID")
@json_option
@click.pass_context
def pool_delete(ctx: click.Context, pool_id: str, as_json: bool) -> None:
    """Delete a pool that never issued a code (otherwise archive it)."""
    delete_pool(get_engine(ctx), pool_id)
    if as_json:
        emit_json({"deleted": pool_id})
    else:
        click.echo(f"Deleted pool {pool_id}.")


POOL_COLUMNS = (
    "id",
    "name",
    "status",
    "mode",
    "total",
    "available",
    "issued",
    "redeemed",
    "redemptions",
)


@pool.command("list")
@json_option
@click.pass_context
def pool_list(ctx: click.Context, as_json: bool) -> None:
    """One row per pool with its counts."""
    views = list_pools(get_engine(ctx))
    if as_json:
        emit_json([view.as_dict() for view in views])
        return
    print_table(
        (*POOL_COLUMNS, "expired"),
        (
            (
                v.id,
                v.name,
                v.status,
                v.settings.mode,
                v.counts.total,
                v.counts.available,
                v.counts.issued,
                v.counts.redeemed,
                v.counts.redemptions,
                v.counts.expired,
            )
            for v in views
        ),
        empty="No pools yet: create one with 'promomail pool create NAME'.",
    )


@pool.command("show")
@click.argument("pool_id", metavar="ID")
@json_option
@click.pass_context
def pool_show(ctx: click.Context, pool_id: str, as_json: bool) -> None:
    """A pool's settings, counts and import history."""
    engine = get_engine(ctx)
    if as_json:
        emit_json(pool_document(engine, pool_id))
        return
    view = show_pool(engine, pool_id)
    history = import_history(engine, pool_id)
    s = view.settings
    click.echo(f"Pool {view.id}: {view.name}")
    print_fields(
        [
            ("status", view.status),
            ("mode", s.mode),
            ("description", s.description),
            ("issued valid days", s.issued_valid_days),
            ("low stock below", s.low_stock),
            ("notify url", s.notify_url),
            ("notify email", s.notify_email),
            ("created (UTC)", view.created_at),
        ]
    )
    click.echo("Counts")
    print_fields(list(view.counts.as_dict().items()))
    click.echo("Imports")
    _print_imports(history)


# ---------------------------------------------------------------------------
# codes and imports: loading, generating, listing and voiding codes
# ---------------------------------------------------------------------------


@cli.group()
def codes() -> None:
    """Upload, generate, list and void a pool's codes."""


def _open_uploads(
    stack: ExitStack, paths: Sequence[str], fmt: str | None, progress: Progress | None
) -> list[Upload]:
    """Uploads for the named files (``-`` is stdin), metered when progress is shown."""
    uploads = []
    for name in paths:
        if name == "-":
            stream = sys.stdin.buffer
            upload = Upload(STDIN_NAME, FileFormat(fmt or FileFormat.TXT), stream=stream)
        else:
            upload = Upload.from_path(name, fmt)
            if progress is not None:
                try:
                    stream = stack.enter_context(Path(name).open("rb"))  # noqa: SIM115
                except OSError as exc:
                    raise CommandFailed(f"{name}: cannot read ({exc.strerror})") from exc
                upload = Upload(upload.source, upload.format, stream=stream)
        if progress is not None and upload.stream is not None:
            metered = cast(BinaryIO, MeteredReader(upload.stream, progress))
            upload = Upload(upload.source, upload.format, stream=metered)
        uploads.append(upload)
    return uploads


def _total_size(paths: Sequence[str]) -> int | None:
    if "-" in paths:
        return None
    try:
        return sum(Path(p).stat().st_size for p in paths)
    except OSError:
        return None


@codes.command("upload")
@click.argument("pool_id", metavar="ID")
@click.argument(
    "files",
    metavar="FILE… | -",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in FileFormat]),
    help="File format (default: from the extension; stdin is txt).",
)
@click.option(
    "--whitespace",
    type=click.Choice([w.value for w in Whitespace]),
    default=Whitespace.REJECT.value,
    show_default=True,
    help="Leading/trailing whitespace: an error, trimmed, or part of the code.",
)
@click.option("--skip-invalid", is_flag=True, help="Store the valid lines, report the rest.")
@json_option
@click.pass_context
def codes_upload(
    ctx: click.Context,
    pool_id: str,
    files: tuple[str, ...],
    fmt: str | None,
    whitespace: str,
    skip_invalid: bool,
    as_json: bool,
) -> None:
    """Load codes from FILEs (or - for stdin) into pool ID, all or nothing."""
    if files.count("-") > 1:
        raise click.BadParameter("stdin ('-') can be read only once", ctx, param_hint="FILE")
    engine = get_engine(ctx)
    progress = Progress("Uploading", _total_size(files)) if stderr_is_terminal() else None
    started = time.perf_counter()
    try:
        with ExitStack() as stack:
            uploads = _open_uploads(stack, files, fmt, progress)
            reports = upload_codes(
                engine,
                pool_id,
                uploads,
                whitespace=Whitespace(whitespace),
                skip_invalid=skip_invalid,
            )
    except ImportRejected as exc:
        if as_json:
            document = rejected_document(engine, pool_id, exc, format_for(exc.source, fmt))
            emit_json(
                upload_document(
                    [document], document["total"], document["available"], several=len(files) > 1
                )
            )
            get_state(ctx).problems_reported = True
        raise
    finally:
        if progress is not None:
            progress.finish()
    seconds = time.perf_counter() - started
    _report_uploads(reports, as_json)
    accepted = sum(r.accepted for r in reports)
    duplicates = sum(r.duplicates for r in reports)
    rejected = sum(r.rejected_count for r in reports)
    note(
        summary(
            "Uploaded",
            accepted,
            f"{plural(duplicates, 'duplicate')}, {rejected:,} rejected",
            seconds,
            accepted + duplicates,
        )
    )


def _report_uploads(reports: Sequence[ImportReport], as_json: bool) -> None:
    total = reports[-1].total if reports else 0
    available = reports[-1].available if reports else 0
    if as_json:
        document = upload_document(
            [r.as_dict() for r in reports], total, available, several=len(reports) > 1
        )
        emit_json(document)
        return
    for report in reports:
        for problem in report.rejected:
            note(f"{report.source}, line {problem.line}: {problem.reason} (skipped)")
        unlisted = report.rejected_count - len(report.rejected)
        if unlisted > 0:
            note(f"{report.source}: … and {unlisted:,} more invalid lines (skipped)")
    print_table(
        ("batch", "file", "format", "lines", "accepted", "duplicates", "rejected"),
        (
            (r.batch, r.source, r.format, r.lines, r.accepted, r.duplicates, r.rejected_count)
            for r in reports
        ),
    )
    click.echo(f"The pool now holds {total:,} codes, {available:,} available.")


@codes.command("generate")
@click.argument("pool_id", metavar="ID")
@click.option("--count", type=int, required=True, metavar="N", help="How many codes to make.")
@click.option(
    "--length",
    type=int,
    default=DEFAULT_LENGTH,
    show_default=True,
    metavar="L",
    help="Random characters per code (prefix and check digit not included).",
)
@click.option(
    "--alphabet",
    default=DEFAULT_ALPHABET,
    show_default=True,
    metavar="CHARS",
    help="Characters to draw from (the default leaves out 0/O and 1/I/L).",
)
@click.option("--prefix", default="", metavar="P", help="Text put before every code.")
@click.option("--check-digit", is_flag=True, help="Append a Luhn mod N check character.")
@json_option
@click.pass_context
def codes_generate(
    ctx: click.Context,
    pool_id: str,
    count: int,
    length: int,
    alphabet: str,
    prefix: str,
    check_digit: bool,
    as_json: bool,
) -> None:
    """Add COUNT secure random codes, unique in pool ID."""
    spec = CodeSpec(length=length, alphabet=alphabet, prefix=prefix, check_digit=check_digit)
    engine = get_engine(ctx)
    terminal = stderr_is_terminal()
    if terminal:
        click.echo(f"Generating {count:,} codes for pool {pool_id}…", err=True, nl=False)
    started = time.perf_counter()
    try:
        report = generate_codes(engine, pool_id, count, spec)
    finally:
        if terminal:
            click.echo("\r\x1b[K", err=True, nl=False)
    seconds = time.perf_counter() - started
    if as_json:
        emit_json(asdict(report))
    else:
        click.echo(
            f"Generated {plural(report.generated, 'code')} in batch {report.batch}; "
            f"pool {pool_id} now holds {report.total:,} codes, {report.available:,} available."
        )
    note(summary("Generated", report.generated, "", seconds, report.generated))


CODE_COLUMNS = ("code", "state", "customer", "mailing", "issued (UTC)", "redeemed (UTC)", "batch")


def _code_row(entry: CodeEntry) -> tuple[Any, ...]:
    return (
        entry.code,
        entry.state,
        entry.customer,
        entry.mailing,
        entry.issued_at,
        entry.redeemed_at,
        entry.batch,
    )


@codes.command("list")
@click.argument("pool_id", metavar="ID")
@click.option(
    "--state",
    type=click.Choice([s.value for s in CodeState]),
    help="Only codes in this state.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    metavar="N",
    help="At most N codes; 0 lists them all.",
)
@json_option
@click.pass_context
def codes_list(
    ctx: click.Context, pool_id: str, state: str | None, limit: int, as_json: bool
) -> None:
    """A pool's codes with state, customer and times (one JSON array with --json)."""
    entries = list_codes(
        get_engine(ctx),
        pool_id,
        state=CodeState(state) if state else None,
        limit=limit or None,
    )
    if as_json:
        emit_json([entry.as_dict() for entry in entries])
        return
    print_table(CODE_COLUMNS, (_code_row(e) for e in entries), empty="(no codes)")
    if limit and len(entries) == limit:
        note(f"Showing the first {limit:,} codes; --limit 0 lists them all.")


@codes.command("void")
@click.argument("pool_id", metavar="ID")
@click.option("--batch", "batch_id", type=int, required=True, metavar="B", help="Import batch.")
@json_option
@click.pass_context
def codes_void(ctx: click.Context, pool_id: str, batch_id: int, as_json: bool) -> None:
    """Withdraw an upload: batch B's never-issued codes become void."""
    engine = get_engine(ctx)
    report = void_batch(engine, pool_id, batch_id)
    alerts = check_low_stock(engine, [pool_id])
    if as_json:
        emit_json({**asdict(report), "low_stock": [alert.as_dict() for alert in alerts]})
    else:
        click.echo(
            f"Voided {plural(report.voided, 'code')} of batch {report.batch} in pool "
            f"{report.pool}; kept {plural(report.kept_issued, 'already issued code')}."
        )
    warn_low_stock(alerts)


IMPORT_COLUMNS = (
    "batch",
    "file",
    "format",
    "accepted",
    "duplicates",
    "rejected",
    "when (UTC)",
    "voided",
)


def _print_imports(history: Sequence[ImportRecord]) -> None:
    print_table(
        IMPORT_COLUMNS,
        (
            (
                r.batch,
                r.file,
                r.format,
                r.accepted,
                r.duplicates,
                r.rejected,
                r.created_at.replace("T", " "),
                r.voided_at.replace("T", " ") if r.voided_at else None,
            )
            for r in history
        ),
        empty="(no imports)",
    )


@cli.command("imports")
@click.argument("pool_id", metavar="ID")
@json_option
@click.pass_context
def imports(ctx: click.Context, pool_id: str, as_json: bool) -> None:
    """A pool's import history: batch, file, format, counts, when."""
    history = import_history(get_engine(ctx), pool_id)
    if as_json:
        emit_json([asdict(record) for record in history])
    else:
        _print_imports(history)


# ---------------------------------------------------------------------------
# Templates and mailings: check, preview, render, mailings, mailing show
# ---------------------------------------------------------------------------


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    """``KEY=VALUE`` option values as a dict, or a usage error naming the option."""
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=option)
        pairs[key.strip()] = text
    return pairs


template_argument = click.argument(
    "template", type=click.Path(exists=True, dir_okay=False), metavar="TEMPLATE"
)
var_option = click.option(
    "--var", "variables", multiple=True, metavar="KEY=VALUE", help="A template variable."
)


@cli.command("check")
@template_argument
@click.option(
    "--recipients",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Also check the template's client columns against this file.",
)
@json_option
@click.pass_context
def check(ctx: click.Context, template: str, recipients: str | None, as_json: bool) -> None:
    """Syntax, parts, pools and columns of a template; writes nothing."""
    report = check_template(get_engine(ctx), template, recipients)
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(f"{report.template}: parts {', '.join(report.parts) or '-'}")
        print_table(
            ["pool", "id", "usage", "line", "status", "available"],
            [(p.ref, p.pool_id, p.usage, p.line, p.status, p.available) for p in report.pools],
            empty="(no promo code calls)",
        )
        if report.columns:
            click.echo(f"client columns: {', '.join(report.columns)}")
        if report.partials:
            click.echo(f"partials (from the template's folder): {', '.join(report.partials)}")
    problems = report.problem_lines()
    # The Error line names template, line and reason; the rest are listed above it.
    if len(problems) > 1:
        for problem in problems:
            note(problem)
        more = len(problems) - 1
        raise CommandFailed(f"{problems[0]} (and {plural(more, 'more problem')})")
    if problems:
        raise CommandFailed(problems[0])
    if not as_json:
        click.echo("OK")


@cli.command("preview")
@template_argument
@click.option(
    "--recipient",
    "recipient_fields",
    multiple=True,
    metavar="KEY=VALUE",
    help="A column of the one recipient to preview (repeat).",
)
@click.option(
    "--recipients",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Preview the first recipients of this file.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="How many recipients of --recipients.",
)
@click.option("--part", metavar="NAME", help="Only this part (subject, text, html, body).")
@var_option
@json_option
@click.pass_context
def preview_command(
    ctx: click.Context,
    template: str,
    recipient_fields: tuple[str, ...],
    recipients: str | None,
    limit: int,
    part: str | None,
    variables: tuple[str, ...],
    as_json: bool,
) -> None:
    """Render without writing: new codes show as placeholders naming the pool."""
    if recipients and recipient_fields:
        raise click.UsageError("give either --recipient KEY=VALUE or --recipients FILE")
    people = preview_recipients(recipients, _pairs(recipient_fields, "--recipient"), limit)
    previews = preview(
        get_engine(ctx), template, people, part=part, variables=_pairs(variables, "--var")
    )
    if as_json:
        emit_json([p.as_dict() for p in previews])
    else:
        for shown in previews:
            click.echo(f"=== {shown.recipient}")
            if shown.parts is None:
                click.echo(f"(failed: {shown.error})")
                continue
            for name, text in shown.parts.items():
                click.echo(f"--- {name}")
                click.echo(text.rstrip("\n"))
    failed = [p for p in previews if p.error]
    for shown in failed:
        note(f"recipient {shown.recipient}: {shown.error}")
    if failed:
        raise CommandFailed(f"{plural(len(failed), 'recipient')} could not be rendered")


def _recipients_count(n: int) -> str:
    return f"{n:,}"


@cli.command("render")
@template_argument
@click.option(
    "--recipients",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    metavar="FILE",
    help="CSV with an id column, or JSON Lines.",
)
@click.option(
    "--mailing",
    "mailing_id",
    required=True,
    metavar="ID",
    help="Mailing id; the same id again resumes or repeats the mailing.",
)
@click.option(
    "--out",
    type=click.Path(),
    metavar="PATH",
    help="Output file (jsonl; stdout when absent) or folder (eml).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice([f.value for f in OutputFormat]),
    default=OutputFormat.JSONL.value,
    show_default=True,
)
@click.option(
    "--on-exhausted",
    type=click.Choice([p.value for p in OnExhausted]),
    default=OnExhausted.STOP.value,
    show_default=True,
    help="When a pool runs out: stop, skip the recipient, or render a blank code.",
)
@click.option(
    "--workers",
    type=LibraryValue("N", parse_workers),
    default=1,
    show_default=True,
    metavar="N",
    help="Rendering processes (1 to 64).",
)
@click.option(
    "--shard",
    "shard_slice",
    type=LibraryValue("K/N", parse_shard),
    metavar="K/N",
    help="Render only shard K of N, 1 ≤ K ≤ N (stable hash of ids).",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=LibraryValue("SECONDS", lambda t: parse_seconds(t, "--wait", allow_zero=True)),
    default=0.0,
    metavar="SECONDS",
    help="When a run of this mailing and shard is in progress, wait up to SECONDS for it "
    "to end instead of refusing at once.",
)
@click.option(
    "--chunk-size", type=LibraryValue("N", parse_chunk_size), default=CHUNK_SIZE, hidden=True
)
@click.option(
    "--lease-seconds",
    type=LibraryValue("SECONDS", lambda t: parse_seconds(t, "the lease", allow_zero=False)),
    default=DEFAULT_LEASE_SECONDS,
    hidden=True,
)
@var_option
@json_option
@click.pass_context
def render(
    ctx: click.Context,
    template: str,
    recipients: str,
    mailing_id: str,
    out: str | None,
    output_format: str,
    on_exhausted: str,
    workers: int,
    shard_slice: Shard | None,
    wait_seconds: float,
    chunk_size: int,
    lease_seconds: float,
    variables: tuple[str, ...],
    as_json: bool,
) -> None:
    """Render a mailing, issuing each recipient their codes.

    One run per mailing and shard at a time: another one is refused (or,
    with --wait, waited for) naming the run in progress.
    """
    fmt = OutputFormat(output_format)
    if as_json and out is None and fmt is OutputFormat.JSONL:
        raise click.UsageError("--json prints the summary on stdout: give --out for the messages")
    if fmt is OutputFormat.EML and out is None:
        raise click.UsageError("--format eml writes one file per recipient: give --out DIR")
    request = RenderRequest(
        template_path=template,
        recipients_path=recipients,
        mailing_id=mailing_id,
        db_url=get_state(ctx).url,
        output=OutputTarget(fmt, Path(out) if out else None),
        on_exhausted=OnExhausted(on_exhausted),
        workers=workers,
        shard=shard_slice or Shard(),
        variables=_pairs(variables, "--var"),
        chunk_size=chunk_size,
        lease_seconds=lease_seconds,
        wait_seconds=wait_seconds,
    )
    get_engine(ctx)  # migrate before the workers start
    progress = Progress("Rendering", show=_recipients_count) if stderr_is_terminal() else None
    try:
        result = render_mailing(request, progress.advance if progress else None)
    finally:
        if progress is not None:
            progress.finish()
    _report_render(result, as_json)


def warn_low_stock(alerts: Sequence[LowStockAlert]) -> None:
    for alert in alerts:
        for line in alert.warnings():
            note(f"Warning: {line}")


def _report_render(result: RenderSummary, as_json: bool) -> None:
    if as_json:
        emit_json(result.as_dict())
    warn_low_stock(result.low_stock)
    if result.took_over:
        note(f"Took over from the earlier run ({result.took_over}), which had stopped.")
    for recipient, line, reason in result.failed:
        note(f"recipient {recipient} (line {line}) failed: {reason}")
    for recipient, reason in result.skipped:
        note(f"recipient {recipient} skipped: {reason}")
    shown = f"{result.seconds:.1f}" if result.seconds >= 1 else f"{result.seconds:.2f}"
    note(
        f"Mailing {result.mailing} ({result.shard}): {result.recipients:,} recipients, "
        f"{result.rendered:,} rendered, {result.new_codes:,} new codes, "
        f"{result.reused_codes:,} reused, {len(result.skipped):,} skipped, "
        f"{len(result.failed):,} failed in {shown} s — {_round_rate(result.rate):,} recipients/s"
    )
    if result.output != "-":
        note(f"Output: {result.output}")
    if result.interrupted:
        raise CommandFailed(
            f"interrupted: {result.rendered:,} recipients rendered and recorded; run the same "
            "command again to resume"
        )
    if result.stopped_at_pool:
        raise CommandFailed(
            f"pool {result.stopped_at_pool!r} ran out of codes: stopped after {result.rendered:,} "
            "recipients, all recorded; add codes and run the same command again to continue"
        )
    if result.failed:
        raise CommandFailed(f"{plural(len(result.failed), 'recipient')} could not be rendered")


def _mailing_row(view: MailingView) -> tuple[Any, ...]:
    t = view.totals
    return (
        view.id,
        view.status,
        t.recipients,
        t.rendered,
        view.codes_issued,
        t.failed,
        view.started_at,
        view.finished_at,
        view.redeemed,
        f"{view.redemption_rate:.1%}",
    )


_MAILING_HEADERS = [
    "id",
    "status",
    "recipients",
    "rendered",
    "codes",
    "failed",
    "started",
    "finished",
    "redeemed",
    "redemption rate",
]


@cli.command("mailings")
@json_option
@click.pass_context
def mailings(ctx: click.Context, as_json: bool) -> None:
    """Every mailing with its recipients, renders, codes and failures."""
    views = list_mailings(get_engine(ctx))
    if as_json:
        emit_json([v.as_dict() for v in views])
    else:
        print_table(_MAILING_HEADERS, [_mailing_row(v) for v in views], empty="(no mailings)")


@cli.group("mailing")
def mailing() -> None:
    """One mailing."""


@mailing.command("show")
@click.argument("mailing_id", metavar="ID")
@json_option
@click.pass_context
def mailing_show(ctx: click.Context, mailing_id: str, as_json: bool) -> None:
    """A mailing's totals and the runs of its shards."""
    view = show_mailing(get_engine(ctx), mailing_id)
    if as_json:
        emit_json(view.as_dict())
        return
    t = view.totals
    print_fields(
        [
            ("mailing", view.id),
            ("status", view.status),
            ("template", view.template),
            ("recipients file", view.recipients_file),
            ("recipients", t.recipients),
            ("rendered", t.rendered),
            ("codes issued", view.codes_issued),
            ("reissues", view.reissues),
            ("redeemed", view.redeemed),
            ("redemption rate", f"{view.redemption_rate:.1%}"),
            ("returned", view.returned),
            ("failed", t.failed),
            ("skipped", t.skipped),
            ("started", view.started_at),
            ("finished", view.finished_at),
        ],
        indent="",
    )
    if len(view.runs) > 1:
        click.echo()
        print_table(
            ["shard", "status", "recipients", "rendered", "new codes", "failed"],
            [
                (
                    r["shard"],
                    r["status"],
                    r["recipients"],
                    r["rendered"],
                    r["new_codes"],
                    r["failed"],
                )
                for r in view.runs
            ],
        )


_ID_NAMES = ", ".join(ID_COLUMNS)
_EMAIL_NAMES = ", ".join(EMAIL_COLUMNS)


@mailing.command(
    "return",
    help=(
        "Give back the codes mailing ID gave to recipients whose messages were never "
        "delivered (hard bounces, suppressed addresses).\n\n"
        "FILE is a recipients file or a bounce list: CSV with a header, or JSON Lines "
        f"(.jsonl). Each row names a recipient by id (column {_ID_NAMES}) or by e-mail "
        f"address (column {_EMAIL_NAMES}; matched through the mailing's recipients "
        "file). Only single-use codes never redeemed and never shown again by another "
        "mailing go back; the others are kept and counted."
    ),
)
@click.argument("mailing_id", metavar="ID")
@click.option(
    "--recipients",
    "recipients_file",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Recipients or bounce list (id or email column).",
)
@click.option("--reason", metavar="TEXT", help="Why, kept with the returned issuances.")
@json_option
@click.pass_context
def mailing_return(
    ctx: click.Context, mailing_id: str, recipients_file: str, reason: str | None, as_json: bool
) -> None:
    engine = get_engine(ctx)
    listed = read_return_list(recipients_file)
    directory: Iterable[tuple[str, str | None]] = ()
    if listed.emails:
        source = show_mailing(engine, mailing_id).recipients_file
        if not source or not Path(source).is_file():
            raise CommandFailed(
                f"{recipients_file} names recipients by e-mail address, but the recipients "
                f"file of mailing {mailing_id!r} ({source or 'unknown'}) cannot be read to "
                "match them: list recipient ids instead"
            )
        directory = ((r.id, r.fields.get("email")) for r in read_recipients(source))
    ids = match_addresses(listed, directory, mailing_id=mailing_id)
    _report_return(return_codes(engine, mailing_id, ids, reason=reason), as_json)


@mailing.command("cancel")
@click.argument("mailing_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option("--reason", metavar="TEXT", help="Why (default: 'mailing cancelled').")
@json_option
@click.pass_context
def mailing_cancel(
    ctx: click.Context, mailing_id: str, yes: bool, reason: str | None, as_json: bool
) -> None:
    """The mailing was never sent: every code it gave goes back to its pool.

    Only single-use codes never redeemed and never shown again by another
    mailing go back; the others are kept and counted. Asks for confirmation
    on a terminal; without a terminal, --yes is required.
    """
    engine = get_engine(ctx)
    if not yes:
        view = show_mailing(engine, mailing_id)
        if not stdin_is_terminal():
            raise CommandFailed(
                f"cancelling mailing {mailing_id!r} gives back its codes: confirm with --yes "
                "(no terminal to ask on)"
            )
        question = (
            f"Mailing {mailing_id} gave {plural(view.codes_issued, 'code')}: give back every "
            "one that can go back to its pool?"
        )
        if not click.confirm(question, err=True):
            raise CommandFailed(f"mailing {mailing_id!r} not cancelled: nothing was changed")
    _report_return(cancel_mailing(engine, mailing_id, reason=reason), as_json)


def _report_return(report: ReturnReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_dict())
        return
    kept = report.kept
    click.echo(
        f"Mailing {report.mailing}: {plural(report.returned, 'code')} back in their pools; "
        f"kept {kept.redeemed:,} redeemed, {kept.reissued:,} reissued, "
        f"{kept.multi_use:,} multi-use."
    )
    if report.not_issued:
        note(f"{plural(report.not_issued, 'listed recipient')} held no code from this mailing")


# ---------------------------------------------------------------------------
# After sending: customer, segment, redeem, export
# ---------------------------------------------------------------------------


@cli.command("customer")
@click.argument("customer_id", metavar="ID")
@json_option
@click.pass_context
def customer(ctx: click.Context, customer_id: str, as_json: bool) -> None:
    """Every code issued to a customer, and the redemptions of their codes."""
    history = customer_history(get_engine(ctx), customer_id)
    if as_json:
        emit_json(history.as_dict())
        return
    if not history.known:
        click.echo(f"No codes were ever issued to or redeemed by customer {customer_id!r}.")
        return
    click.echo(f"Codes of customer {customer_id}:")
    # The returned column only when something came back: most histories have none.
    any_returned = any(i.returned_at is not None for i in history.issuances)
    print_table(
        ["pool", "code", "kind", "mailing", "issued", "redeemed by"]
        + (["returned"] if any_returned else []),
        [
            (
                i.pool,
                i.code,
                i.kind,
                i.mailing,
                i.issued_at,
                ", ".join(r or "(anonymous)" for r in i.redeemed_by) or None,
            )
            + ((_returned_cell(i.returned_at, i.return_reason),) if any_returned else ())
            for i in history.issuances
        ],
    )
    if history.redemptions:
        click.echo()
        click.echo("Redemptions:")
        print_table(
            ["pool", "code", "issued to", "redeemed by", "order", "when", "mailing", "rolled back"],
            [
                (
                    r.pool,
                    r.code,
                    r.issued_to,
                    r.redeemed_by,
                    r.order,
                    r.redeemed_at,
                    r.mailing,
                    r.rolled_back_at,
                )
                for r in history.redemptions
            ],
        )


def _returned_cell(returned_at: datetime | None, reason: str | None) -> str | None:
    if returned_at is None:
        return None
    shown = returned_at.isoformat(sep=" ", timespec="seconds")
    return f"{shown} ({reason})" if reason else shown


@cli.command("segment")
@click.option("--issued-from", multiple=True, metavar="POOL", help="Count codes from this pool.")
@click.option("--min-issued", type=click.IntRange(min=0), metavar="N")
@click.option("--max-issued", type=click.IntRange(min=0), metavar="N")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), metavar="DATE")
@click.option(
    "--format",
    "output_format",
    type=click.Choice([f.value for f in SegmentFormat]),
    default=SegmentFormat.IDS.value,
    show_default=True,
)
@json_option
@click.pass_context
def segment_command(
    ctx: click.Context,
    issued_from: tuple[str, ...],
    min_issued: int | None,
    max_issued: int | None,
    since: datetime | None,
    output_format: str,
    as_json: bool,
) -> None:
    """Customer ids by the codes they were issued; usable as --recipients."""
    ids = segment(
        get_engine(ctx),
        issued_from=issued_from,
        min_issued=min_issued,
        max_issued=max_issued,
        since=since,
    )
    if as_json:
        emit_json({"count": len(ids), "ids": ids})
        return
    write_segment(ids, sys.stdout, SegmentFormat(output_format))
    note(f"{plural(len(ids), 'customer')} in the segment")


@cli.command("redeem")
@click.argument("code")
@click.option("--customer", "customer_id", metavar="C", help="Who is redeeming (e.g. a friend).")
@click.option("--order", metavar="O", help="The order the code is used for.")
@click.option("--pool", "pool_id", metavar="ID", help="The pool, when the code is in several.")
@click.option(
    "--dry-run", is_flag=True, help="Only answer whether it would redeem now; change nothing."
)
@json_option
@click.pass_context
def redeem_command(
    ctx: click.Context,
    code: str,
    customer_id: str | None,
    order: str | None,
    pool_id: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Redeem a code at checkout; exit 1 with the reason when refused.

    Again with the same --order as an earlier successful redemption, the
    same success is answered ("replayed") and nothing new is recorded.
    """
    result = redeem(
        get_engine(ctx), code, customer=customer_id, order=order, pool=pool_id, dry_run=dry_run
    )
    if as_json:
        emit_json(result.as_dict())
        if not result.ok:
            ctx.exit(1)
        return
    if not result.ok:
        would = "would be refused" if dry_run else "refused"
        raise CommandFailed(f"code {code!r} {would}: {result.reason}")
    issued = f"issued to {result.issued_to}" if result.issued_to else "never issued"
    if result.mailing:
        issued += f" by mailing {result.mailing}"
    by = f", redeemed by {result.redeemed_by}" if result.redeemed_by else ""
    order_text = f", order {result.order}" if result.order else ""
    if result.replayed:
        verb = "Already redeemed (replayed)"
    else:
        verb = "Would redeem" if dry_run else "Redeemed"
    click.echo(f"{verb} {result.code} from pool {result.pool} ({issued}{by}{order_text}).")


@cli.command("unredeem")
@click.argument("code")
@click.option("--order", required=True, metavar="O", help="The cancelled or refunded order.")
@click.option("--pool", "pool_id", metavar="ID", help="The pool, when the code is in several.")
@json_option
@click.pass_context
def unredeem_command(
    ctx: click.Context, code: str, order: str, pool_id: str | None, as_json: bool
) -> None:
    """Undo the redemption of CODE by an order that was cancelled or refunded.

    A single-use code can then be redeemed again; a multi-use code's count
    drops by one. The redemption stays in the history, marked rolled back.
    """
    result = unredeem(get_engine(ctx), code, order=order, pool=pool_id)
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(
        f"Rolled back the redemption of {result.code} (pool {result.pool}) by order "
        f"{result.order}; {plural(result.redemptions, 'redemption')} left."
    )


@cli.group("export")
def export() -> None:
    """Export records as files."""


@export.command("issuances")
@click.option("--pool", "pool_id", metavar="P", help="Only this pool.")
@click.option("--mailing", "mailing_id", metavar="M", help="Only this mailing.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, metavar="FILE.csv")
@json_option
@click.pass_context
def export_issuances_command(
    ctx: click.Context, pool_id: str | None, mailing_id: str | None, out: str, as_json: bool
) -> None:
    """The issuance log (who got which code, when) as CSV."""
    rows = export_issuances(get_engine(ctx), out, pool=pool_id, mailing=mailing_id)
    if as_json:
        emit_json({"file": out, "rows": rows})
    else:
        click.echo(f"Wrote {plural(rows, 'issuance')} to {out}.")


# ---------------------------------------------------------------------------
# The HTTP service and its tokens
# ---------------------------------------------------------------------------


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True)
@click.option(
    "--templates",
    type=click.Path(exists=True, file_okay=False),
    metavar="DIR",
    help="Templates (*.j2, *.jinja) for the preview page.",
)
@click.option(
    "--recipients",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Recipients to pick from on the preview page.",
)
@click.pass_context
def serve_command(
    ctx: click.Context, host: str, port: int, templates: str | None, recipients: str | None
) -> None:
    """Serve the HTTP API and the preview page until SIGTERM or Ctrl-C."""
    from service import ServiceConfig, serve

    config = ServiceConfig(
        get_state(ctx).url,
        host=host,
        port=port,
        templates=Path(templates) if templates else None,
        recipients=Path(recipients) if recipients else None,
    )
    try:
        serve(config)
    except OSError as exc:
        raise CommandFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@cli.group("token")
def token() -> None:
    """Bearer tokens of the HTTP service."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope", type=click.Choice([s.value for s in Scope]), required=True, help="What it may do."
)
@click.option(
    "--pool", "pools", multiple=True, metavar="ID", help="Limit it to this pool (repeat)."
)
@json_option
@click.pass_context
def token_create(
    ctx: click.Context, name: str, scope: str, pools: tuple[str, ...], as_json: bool
) -> None:
    """Make a token; its secret is printed once and only its hash is kept."""
    issued = create_token(get_engine(ctx), name, Scope(scope), pools)
    if as_json:
        emit_json(issued.as_dict())
        return
    limited = f", pools {', '.join(issued.pools)}" if issued.pools else ""
    click.echo(issued.token)
    note(f"Token {issued.name} (scope {issued.scope}{limited}): shown once, keep it safe.")


@token.command("list")
@json_option
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """Every token with its scope, pools and state (never the secret)."""
    infos = list_tokens(get_engine(ctx))
    if as_json:
        emit_json([info.as_dict() for info in infos])
        return
    print_table(
        ["name", "scope", "pools", "created", "revoked"],
        [
            (i.name, i.scope, ", ".join(i.pools) or "(all)", i.created_at, i.revoked_at)
            for i in infos
        ],
        empty="(no tokens)",
    )


@token.command("revoke")
@click.argument("name")
@json_option
@click.pass_context
def token_revoke(ctx: click.Context, name: str, as_json: bool) -> None:
    """Revoke a token: the next request with it is refused."""
    info = revoke_token(get_engine(ctx), name)
    if as_json:
        emit_json(info.as_dict())
    else:
        click.echo(f"Revoked token {info.name}.")


if __name__ == "__main__":
    main()
