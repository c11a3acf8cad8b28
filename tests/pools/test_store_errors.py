"""Database-driver errors become the store's own exceptions, once, at the store.

Each case provokes the real failure in the real database; the front ends
then see a :class:`DatabaseFailure` that names the database without its
password, with the driver's exception kept as ``__cause__`` for logs.
"""

from __future__ import annotations

import pickle
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import IntegrityError, OperationalError

import promomail.templating.errors  # noqa: F401  (its errors are PromomailError subclasses too)
from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.errors import (
    DatabaseFailure,
    LeaseLost,
    PoolExhausted,
    PromomailError,
    ReservationLost,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import (
    StoreConfig,
    is_postgres,
    open_engine,
    read_transaction,
    store_connection,
    write_transaction,
)
from promomail.pools.store.idle_ping import PING_AFTER_IDLE_S
from promomail.pools.store.models import Pool
from tests.support.cli_helpers import Cli

UNREACHABLE = "postgresql://bob:s3cretpw@127.0.0.1:1/nowhere"


def test_a_broken_constraint_is_a_store_conflict(engine: Engine) -> None:
    create_pool(engine, PoolSettings("Twice", description="x"))
    again = {"id": "twice", "name": "Twice", "description": "again", "created_at": utcnow()}
    with pytest.raises(StoreConflict) as caught, write_transaction(engine) as conn:
        conn.execute(insert(Pool).values(**again))
    assert isinstance(caught.value.__cause__, IntegrityError)
    assert "twice" in str(caught.value) or "UNIQUE" in str(caught.value).upper()
    shown = engine.url.set(drivername=engine.url.get_backend_name()).render_as_string()
    assert str(caught.value).startswith(f"database {shown}: ")


def test_an_unreachable_store_is_unavailable_and_its_password_is_not_shown() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        open_engine(StoreConfig(UNREACHABLE))
    message = str(caught.value)
    assert message.startswith("cannot open database postgresql://bob:***@127.0.0.1:1/nowhere: ")
    assert "s3cretpw" not in message
    assert isinstance(caught.value.__cause__, OperationalError)


def test_a_connection_cut_inside_a_transaction_is_unavailable(engine: Engine) -> None:
    if not is_postgres(engine):
        pytest.skip("only a server connection can be cut from outside")
    with pytest.raises(StoreUnavailable), read_transaction(engine) as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            other.commit()
        conn.execute(text("SELECT 1"))


def _cut_from_outside(engine: Engine) -> int:
    """Close the connection the pool hands out next, from another connection."""
    with store_connection(engine) as conn:
        pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    other = open_engine(StoreConfig(engine.url.render_as_string(hide_password=False)))
    try:
        with other.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        other.dispose()
    return pid


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_connection_cut_while_idle_is_replaced_before_use(engine: Engine) -> None:
    cut = _cut_from_outside(engine)
    time.sleep(PING_AFTER_IDLE_S + 0.2)
    with store_connection(engine) as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != cut


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_connection_cut_just_after_use_fails_once_then_the_pool_reconnects(
    engine: Engine,
) -> None:
    cut = _cut_from_outside(engine)
    with pytest.raises(StoreUnavailable), store_connection(engine) as conn:
        conn.execute(text("SELECT 1"))
    with store_connection(engine) as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != cut


def test_bad_sql_is_a_failure_of_the_store_not_a_conflict_nor_an_outage(engine: Engine) -> None:
    with pytest.raises(DatabaseFailure) as caught, read_transaction(engine) as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert type(caught.value) is DatabaseFailure
    assert "no_such_table" in str(caught.value)


def test_an_error_of_a_raw_driver_cursor_is_translated_too(engine: Engine) -> None:
    # COPY, savepoints and BEGIN IMMEDIATE run on the driver's own cursor,
    # whose errors SQLAlchemy never wraps.
    with pytest.raises(DatabaseFailure) as caught, read_transaction(engine) as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute("SELECT * FROM no_such_table")
    assert type(caught.value) is DatabaseFailure
    assert isinstance(caught.value.__cause__, engine.dialect.loaded_dbapi.Error)


def test_a_locked_sqlite_store_is_unavailable_for_now(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    engine = open_engine(StoreConfig(url))
    holder = sqlite3.connect(tmp_path / "locked.db")
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable, match="locked"), store_connection(engine) as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout = 0")
            conn.execute(text("DELETE FROM pools"))  # needs the write lock the holder has
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()


def test_a_url_with_a_bad_port_or_an_unknown_backend_is_shown_without_its_password() -> None:
    with pytest.raises(
        StoreError, match=r"invalid database URL .postgresql://bob:\*\*\*@host:port/x."
    ) as bad_port:
        StoreConfig("postgresql://bob:s3cretpw@host:port/x")
    with pytest.raises(StoreError, match=r"unsupported database 'mysql'") as unknown:
        StoreConfig("mysql://bob:s3cretpw@host/x")
    assert "s3cretpw" not in str(bad_port.value) + str(unknown.value)


def test_the_command_line_shows_one_line_without_the_password() -> None:
    result = Cli(UNREACHABLE)("pool", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot open database postgresql://bob:***@127.0.0.1:1/")
    assert result.stderr.count("\n") == 1
    assert "s3cretpw" not in result.stderr


def _every_error_class() -> list[type[PromomailError]]:
    found: list[type[PromomailError]] = []
    pending: list[type[PromomailError]] = [PromomailError]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


def test_errors_cross_processes_with_their_message_and_parts() -> None:
    """Workers and store helpers send errors over pipes: each comes back whole."""
    lost = LeaseLost("m-1", "2/4", None)
    exhausted = PoolExhausted("spring", 10, 3)
    for error in (lost, exhausted, ReservationLost("codes were reclaimed")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert str(back) == str(error) and back.__dict__ == error.__dict__
    assert pickle.loads(pickle.dumps(exhausted)).available == 3
    # Every error class, whatever its __init__ takes.
    for kind in _every_error_class():
        bare = kind.__new__(kind)
        bare.args = (f"a {kind.__name__}",)
        again = pickle.loads(pickle.dumps(bare))
        assert type(again) is kind and str(again) == str(bare)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("prepared", [True, False])
def test_only_a_store_opened_for_a_service_prepares_its_statements(
    db_url: str, engine: Engine, prepared: bool
) -> None:
    """A render's look-ups by a list of ids need plans made for their own
    values; a service's one-row statements are cheaper prepared."""
    store = open_engine(StoreConfig(db_url, prepared_statements=prepared))
    try:
        with store_connection(store) as conn:
            for _ in range(8):  # past psycopg's threshold
                conn.execute(text("SELECT count(*) FROM pools WHERE id = :id"), {"id": "x"})
            count = conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar_one()
    finally:
        store.dispose()
    assert (count > 0) is prepared
