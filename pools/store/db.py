"""Connecting to the store: engine set-up per dialect and schema migrations.

SQLite gets WAL (readers never block the writer), a busy timeout, and
``BEGIN IMMEDIATE`` for write transactions: a deferred transaction that reads
and then writes fails with SQLITE_BUSY_SNAPSHOT under concurrency, whatever
the busy timeout. PostgreSQL URLs are routed to psycopg 3.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
)
from sqlalchemy.pool import Pool, QueuePool

from promomail.pools.display import KNOWN_PARAMETERS, MIN_SCRUBBED, redact_url, scrub, url_secrets
from promomail.pools.errors import (
    DatabaseFailure,
    StoreConflict,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
)
from promomail.pools.store.defaults import DEFAULT_URL as DEFAULT_URL
from promomail.pools.store.idle_ping import ping_when_idle
from promomail.pools.store.writer_queue import WriterQueue

SQLITE_BUSY_TIMEOUT_S = 60.0
#: Page cache per connection; a render holds two connections per worker.
SQLITE_CACHE_KIB = 16 * 1024
#: Page cache while bulk loading codes, so a large pool's indexes stay cached.
SQLITE_BULK_CACHE_KIB = 64 * 1024
MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest migration. Every command compares the store against it, and
#: Alembic (a quarter of a second to import) is loaded only when they differ;
#: tests/pools/test_migrations.py checks it against Alembic's own head.
SCHEMA_HEAD = "0008"
# Any fixed number: serialises concurrent first-use migrations on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x70726F6D6F


@dataclass(frozen=True)
class StoreConfig:
    """Where the store lives; validated so a bad URL fails before any work."""

    url: str = DEFAULT_URL
    echo: bool = False
    engine_options: dict[str, Any] = field(default_factory=dict)
    #: PostgreSQL: let psycopg prepare a statement a connection runs often (see
    #: :func:`_postgres_engine`). For a service's short, repeated statements.
    prepared_statements: bool = False

    def __post_init__(self) -> None:
        try:
            parsed = make_url(self.url)
        except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is no number
            raise StoreError(f"invalid database URL {redact_url(self.url)!r}") from exc
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise StoreError(
                f"unsupported database {parsed.get_backend_name()!r} in "
                f"{redact_url(self.url)}: use sqlite:///FILE or postgresql://…"
            )
        misread = _misread(self.url, parsed)
        if misread:
            raise StoreError(f"invalid database URL {redact_url(self.url)!r}: {misread}")

    def __str__(self) -> str:
        """The store as people may see it: never a password."""
        return shown_url(make_url(self.url))

    def __repr__(self) -> str:
        return f"StoreConfig({str(self)!r})"

    @property
    def sqlalchemy_url(self) -> str:
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed.render_as_string(hide_password=False)


def create_store_engine(config: StoreConfig) -> Engine:
    url = config.sqlalchemy_url
    try:
        if url.startswith("sqlite"):
            return _sqlite_engine(url, config)
        return _postgres_engine(url, config)
    except ArgumentError as exc:  # e.g. an unknown driver: postgresql+nosuch://
        reason = scrub(first_line(exc), url_secrets(config.url))
        raise StoreError(f"cannot use database {config}: {reason}") from exc


def _postgres_engine(url: str, config: StoreConfig) -> Engine:
    # psycopg prepares a statement a connection runs a few times: PostgreSQL
    # then skips parsing and planning it, half of what a checkout costs the
    # server. After a few runs a prepared statement may get a generic plan;
    # for a render's per-chunk look-ups by a list of customer ids that plan
    # filters instead of using the index, so its cost grows with the mailing.
    # Only a service, whose statements touch a row or a few, prepares them;
    # everything else is planned per execution. (Forcing custom plans on the
    # session instead would also re-plan the foreign-key checks PostgreSQL
    # runs for every inserted row.)
    preparing = {} if config.prepared_statements else {"prepare_threshold": None}
    engine = create_engine(url, echo=config.echo, connect_args=preparing, **config.engine_options)
    ping_when_idle(engine)
    return engine


def _sqlite_engine(url: str, config: StoreConfig) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise StoreError(f"cannot open database {database!r}: folder {parent} does not exist")
    engine = create_engine(
        url,
        echo=config.echo,
        # Keep connections open: closing the last connection to a WAL
        # database checkpoints and removes the WAL, which is slow per chunk.
        # Worker processes are spawned, never forked, so none is shared.
        poolclass=QueuePool,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None},
        **config.engine_options,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Bulk loads stage rows in temporary tables; keep them off disk.
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    # How a transaction begins is the dialect's own step, not a "begin" event:
    # any connection event listener sends every statement of the engine down
    # SQLAlchemy's event path, a fifth of a redemption's CPU.
    engine.dialect.do_begin = _begin_sqlite  # type: ignore[method-assign,assignment]

    return engine


#: The pooled connection's ``info`` key saying how its next transaction
#: begins: ``IMMEDIATE`` (a writer), ``NONE`` (one statement, SQLite's own
#: autocommit), else a deferred ``BEGIN``.
_SQLITE_BEGIN = "promomail_sqlite_begin"


def _begin_sqlite(connection: Any) -> None:
    """Begin a transaction on a pooled SQLite connection, as its user asked.

    The driver's connection runs in autocommit (``isolation_level=None``),
    so every transaction starts here, with an explicit ``BEGIN``.
    """
    begin = connection.info.pop(_SQLITE_BEGIN, None)
    if begin == "IMMEDIATE":
        _begin_immediate(connection.driver_connection)
    elif begin != "NONE":
        connection.driver_connection.execute("BEGIN")


@contextmanager
def _sqlite_begin(conn: Connection, how: str) -> Iterator[Connection]:
    """``conn``, whose next transaction begins ``how`` (see :data:`_SQLITE_BEGIN`)."""
    info = conn.connection.info
    info[_SQLITE_BEGIN] = how
    try:
        yield conn
    finally:
        info.pop(_SQLITE_BEGIN, None)  # unused: it must not outlive this checkout


_LOCKED_TOO_LONG = f"the database stayed locked by another writer for {SQLITE_BUSY_TIMEOUT_S:g} s"


def _begin_immediate(dbapi_connection: Any) -> None:
    """Take SQLite's write lock, waiting for it in short steps.

    SQLite's own busy handler backs off to sleeps of up to 100 ms, so with
    several render workers a waiting writer often sleeps long after the lock
    was released. Retrying every fraction of a millisecond instead keeps the
    single writer slot busy. Read statements keep the ordinary busy timeout.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
        pause = 0.0002
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(_LOCKED_TOO_LONG) from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.004)
    finally:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()


#: SQLSTATE classes and codes of a server that cannot be reached or went away:
#: connection exceptions, and an administrator or crash shutting it down.
_UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")
#: SQLite's words for a database it cannot open or whose lock never came free.
_SQLITE_UNAVAILABLE = ("unable to open database", "database is locked")


def _misread(text: str, parsed: URL) -> str | None:
    """Why a PostgreSQL URL cannot be read as its writer meant, if it cannot.

    An unescaped ``@``, ``/``, ``?`` or ``#`` in a user name or password (or
    an ``@`` in a query value), or an unescaped ``&`` in a query value, makes
    the parser cut a password in pieces and use them as the host, the
    database or a parameter's name, which the driver's errors then print. Such a URL is refused, never guessed at; libpq would refuse
    an unknown parameter anyway, printing its name.
    """
    if parsed.get_backend_name() != "postgresql":
        return None
    after_scheme = text.partition("://")[2]
    if "@" in after_scheme:
        userinfo = after_scheme.partition("@")[0]
        if after_scheme.count("@") > 1 or any(mark in userinfo for mark in "/?#"):
            return (
                "an '@', '/', '?' or '#' in a user name, a password or a value must be "
                "written %40, %2F, %3F or %23"
            )
    query = after_scheme.partition("?")[2]
    names = [part.partition("=")[0].lower() for part in query.split("&") if part]
    if any(name not in KNOWN_PARAMETERS for name in names):
        # Not named: it may be a piece of a password cut at an unescaped '&'.
        return (
            "its query holds a parameter PostgreSQL does not know; write an '&' in a value as %26"
        )
    return None


def shown_url(url: URL) -> str:
    """The URL as people write it: no password (nor secret parameters), no driver."""
    shown = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)
    return redact_url(shown) if url.query else shown


def _unavailable(error: BaseException, backend: str) -> bool:
    if backend == "sqlite":
        return any(words in str(error) for words in _SQLITE_UNAVAILABLE)
    # psycopg: None when the client itself lost or never got a connection.
    sqlstate = getattr(error, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(_UNREACHABLE_SQLSTATES)


def driver_failure(exc: BaseException, engine: Engine) -> DatabaseFailure:
    """The store's own exception for a driver error, naming the database without its password.

    ``exc`` is SQLAlchemy's wrapper or, where the store drives the cursor
    itself (COPY, savepoints, ``BEGIN IMMEDIATE``), the driver's own error.
    """
    url = engine.url
    error = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    # A password may be echoed back in the driver's text (a short one would
    # also match ordinary words, and the URL is shown without it anyway).
    secrets = url_secrets(url.render_as_string(hide_password=False))
    if url.password and len(str(url.password)) >= MIN_SCRUBBED:
        secrets.append(str(url.password))
    reason = scrub(first_line(error), sorted(secrets, key=len, reverse=True))
    message = f"database {shown_url(url)}: {reason}"
    if isinstance(error, engine.dialect.loaded_dbapi.IntegrityError):
        return StoreConflict(message)
    invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
    if invalidated or _unavailable(error, url.get_backend_name()):
        return StoreUnavailable(message)
    return DatabaseFailure(message)


@contextmanager
def store_connection(engine: Engine) -> Iterator[Connection]:
    """A connection whose driver errors arrive as :class:`DatabaseFailure`.

    The one place they are translated: every transaction of the library
    opens here, so no front end needs to know SQLAlchemy's exceptions.
    """
    try:
        with engine.connect() as conn:
            yield conn
    except (DBAPIError, engine.dialect.loaded_dbapi.Error) as exc:
        raise driver_failure(exc, engine) from exc


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: takes SQLite's write lock up front.

    On SQLite, the threads of this process queue for it in arrival order
    first (:mod:`pools.store.writer_queue`).
    """
    with _writer_turn(engine), store_connection(engine) as conn:
        if is_postgres(conn):
            with conn.begin():
                yield conn
            return
        with _sqlite_begin(conn, "IMMEDIATE"), conn.begin():
            yield conn


#: Each SQLite database's writer queue, by connection pool (shared by every
#: engine derived from one, and gone with it).
_WRITER_QUEUES: weakref.WeakKeyDictionary[Pool, WriterQueue] = weakref.WeakKeyDictionary()
_WRITER_QUEUES_LOCK = threading.Lock()


@contextmanager
def _writer_turn(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "sqlite":
        yield
        return
    queue = _WRITER_QUEUES.get(engine.pool)
    if queue is None:  # the pool's first writer; the lock keeps a race to one queue
        with _WRITER_QUEUES_LOCK:
            queue = _WRITER_QUEUES.setdefault(engine.pool, WriterQueue())
    if not queue.acquire(SQLITE_BUSY_TIMEOUT_S):
        raise StoreError(_LOCKED_TOO_LONG)
    try:
        yield
    finally:
        queue.release()


@contextmanager
def one_statement_read(engine: Engine) -> Iterator[Connection]:
    """A connection for one read statement: no transaction around it.

    On PostgreSQL it runs in autocommit, without the round trips of
    ``BEGIN`` and ``COMMIT`` (a request's token look-up pays them otherwise).
    """
    with _autocommitted(engine) as conn:
        yield conn


@contextmanager
def one_statement_write(engine: Engine) -> Iterator[Connection]:
    """A connection for one write statement that needs no transaction around it.

    On PostgreSQL it runs in autocommit: the statement is its own
    transaction, without the round trips of ``BEGIN`` and ``COMMIT``. SQLite
    has no round trips to save, so it is a :func:`write_transaction` there
    (its writers queue for the lock).
    """
    if engine.dialect.name == "sqlite":
        with write_transaction(engine) as conn:
            yield conn
        return
    with _autocommitted(engine) as conn:
        yield conn


@contextmanager
def _autocommitted(engine: Engine) -> Iterator[Connection]:
    """A connection whose statements are each their own transaction."""
    with store_connection(engine) as conn:
        if is_postgres(conn):
            yield conn.execution_options(isolation_level="AUTOCOMMIT")
            return
        with _sqlite_begin(conn, "NONE"):
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    with store_connection(engine) as conn, conn.begin():
        yield conn


@contextmanager
def snapshot_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction whose queries all see the store as its first one saw it.

    For an answer built from many queries (one per slice of a file), so no
    write in between splits it: PostgreSQL's REPEATABLE READ; a SQLite read
    transaction in WAL mode is one snapshot already.
    """
    with store_connection(engine) as conn:
        if is_postgres(conn):
            conn = conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        with conn.begin():
            yield conn


@contextmanager
def bulk_loading(conn: Connection) -> Iterator[None]:
    """A larger SQLite page cache while codes are bulk loaded into a pool."""
    if is_postgres(conn):
        yield
        return
    conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_BULK_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")


def is_postgres(conn_or_engine: Connection | Engine) -> bool:
    return conn_or_engine.dialect.name == "postgresql"


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest migration, as Alembic finds it in the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _stored_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(engine: Engine) -> str | None:
    with store_connection(engine) as conn:
        return _stored_revision(conn)


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest revision; safe to race from many processes."""
    if current_revision(engine) == SCHEMA_HEAD:
        return SCHEMA_HEAD
    from alembic import command

    with write_transaction(engine) as conn:
        if is_postgres(conn):
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        if _stored_revision(conn) != SCHEMA_HEAD:
            command.upgrade(_alembic_config(conn), "head")
    return SCHEMA_HEAD


def sqlite_file(url: URL | str) -> Path | None:
    """The file of a SQLite store, absolute; None for memory, URI names and other databases."""
    parsed = make_url(url) if isinstance(url, str) else url
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if parsed.query.get("uri") in ("true", "1"):
        return None
    return Path(database).expanduser().resolve()


def store_location(engine_or_url: Engine | URL | str) -> str:
    """Where a store is, as people look for it: a SQLite store's absolute path,
    any other the URL without its password."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else engine_or_url
    parsed = make_url(url) if isinstance(url, str) else url
    path = sqlite_file(parsed)
    return str(path) if path is not None else shown_url(parsed)


def open_engine(config: StoreConfig, *, migrate: bool = True, create: bool = True) -> Engine:
    """An engine on an up-to-date schema, or a StoreError naming the database.

    ``create=False`` is for what only reads: a SQLite file that does not exist
    is refused (StoreNotFound) instead of being created empty, so a typo in
    its path is named rather than answered with an empty store.
    """
    if not create:
        path = sqlite_file(config.url)
        if path is not None and not path.exists():
            raise StoreNotFound(str(path))
    engine = create_store_engine(config)
    if migrate:
        try:
            upgrade(engine)
        except DatabaseFailure as exc:
            engine.dispose()
            raise type(exc)(f"cannot open {exc}") from exc.__cause__
    return engine


def first_line(error: BaseException | None) -> str:
    message = str(error).strip() if error is not None else ""
    return message.splitlines()[0] if message else type(error).__name__
