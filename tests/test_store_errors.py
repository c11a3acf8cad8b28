"""Database-driver errors become the store's own exceptions, once, at the store.

Each case provokes the real failure in the real database; the front ends
then see a :class:`DatabaseFailure` that names the database without its
password, with the driver's exception kept as ``__cause__`` for logs.
"""

from __future__ import annotations

import pytest
from cli_helpers import Cli
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import IntegrityError, OperationalError

from pools.admin.lifecycle import PoolSettings, create_pool
from pools.errors import DatabaseFailure, StoreConflict, StoreUnavailable
from pools.store.db import (
    StoreConfig,
    is_postgres,
    open_engine,
    read_transaction,
    write_transaction,
)
from pools.store.models import Pool

UNREACHABLE = "postgresql://bob:s3cretpw@127.0.0.1:1/nowhere"


def test_a_broken_constraint_is_a_store_conflict(engine: Engine) -> None:
    create_pool(engine, PoolSettings("Twice", description="x"))
    with pytest.raises(StoreConflict) as caught, write_transaction(engine) as conn:
        conn.execute(insert(Pool).values(id="Twice", description="again"))
    assert isinstance(caught.value.__cause__, IntegrityError)
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


def test_a_driver_failure_in_sql_is_named_but_not_a_conflict(engine: Engine) -> None:
    with pytest.raises(DatabaseFailure) as caught, read_transaction(engine) as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert not isinstance(caught.value, StoreConflict)
    assert "no_such_table" in str(caught.value)


def test_the_command_line_shows_one_line_without_the_password() -> None:
    result = Cli(UNREACHABLE)("pool", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot open database postgresql://bob:***@127.0.0.1:1/")
    assert result.stderr.count("\n") == 1
    assert "s3cretpw" not in result.stderr
