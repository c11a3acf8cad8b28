"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``PROMOMAIL_TEST_PG`` (default: the local server's
``test`` database). Each test gets a schema of its own, named in the URL's
``search_path``, so tests can run in parallel and in subprocesses. Where no
server answers the PostgreSQL cases skip, unless ``PROMOMAIL_REQUIRE_PG=1``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import settings
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError

from promomail.pools.after_sending.references import REF_KEY
from promomail.pools.store.db import StoreConfig, open_engine, sqlite_file

# CI explores the same examples every run, so a red build always means a
# change broke something; local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

PG_URL = os.environ.get("PROMOMAIL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("PROMOMAIL_REQUIRE_PG") == "1"


def _admin_url() -> str:
    return StoreConfig(PG_URL).sqlalchemy_url


_pg_checked: str | None = None


def _postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers."""
    global _pg_checked
    if _pg_checked is None:
        try:
            engine = create_engine(_admin_url(), connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_checked = ""
        except OperationalError as exc:
            _pg_checked = f"PostgreSQL at {PG_URL} does not answer: {str(exc.orig).strip()}"
    return _pg_checked or None


def _with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty store (schema not yet created) on each database."""
    if request.param == "sqlite":
        # An empty file is an empty SQLite database: the store exists, as the
        # PostgreSQL schema below does, so a command that only reads opens it.
        (tmp_path / "promomail.db").touch()
        yield f"sqlite:///{tmp_path / 'promomail.db'}"
        return
    problem = _postgres_problem()
    if problem:
        if REQUIRE_PG:
            pytest.fail(f"{problem} (PROMOMAIL_REQUIRE_PG=1)")
        pytest.skip(problem)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(_admin_url())
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _with_search_path(PG_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The file of a SQLite store the migrations brought to the newest schema, once a run."""
    path = tmp_path_factory.mktemp("migrated") / "promomail.db"
    path.touch()
    eng = open_engine(StoreConfig(f"sqlite:///{path}"))
    with eng.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return path.read_bytes()


#: What a migration sends that changes a schema (not Alembic's look-ups).
_WRITES = re.compile(r"\s*(CREATE|ALTER|DROP|COMMENT|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    sql: str
    parameters: Any
    many: bool


@pytest.fixture(scope="session")
def migration_statements() -> Iterator[list[Statement]]:
    """What the migrations sent to bring an empty PostgreSQL schema to the newest
    one, recorded once a run, to be sent again to each empty schema."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(_admin_url())
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sent: list[Statement] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if _WRITES.match(statement):
            bare = context is not None and context.no_parameters
            sent.append(Statement(statement, None if bare else parameters, many))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        open_engine(StoreConfig(_with_search_path(PG_URL, schema))).dispose()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    assert any(s.sql.lstrip().upper().startswith("CREATE TABLE") for s in sent), sent
    yield sent


def _migrate_by_copy(request: pytest.FixtureRequest, db_url: str) -> None:
    """An empty store gets the newest schema from what the migrations wrote once
    this run: a SQLite file copied, PostgreSQL statements sent again. Its key for
    delivery references is drawn anew, as the migration draws one per store."""
    key = os.urandom(32).hex()
    path = sqlite_file(db_url)
    if path is not None:
        if path.stat().st_size == 0:
            path.write_bytes(request.getfixturevalue("migrated_sqlite"))
            with contextlib.closing(sqlite3.connect(path)) as copy, copy:
                redrawn = copy.execute(
                    "UPDATE store_secrets SET value = ? WHERE name = ?", (key, REF_KEY)
                )
                assert redrawn.rowcount == 1
        return
    statements: list[Statement] = request.getfixturevalue("migration_statements")
    eng = create_engine(StoreConfig(db_url).sqlalchemy_url)
    try:
        with eng.begin() as conn:
            if conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
            ).scalar():
                return
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            for statement in statements:
                if statement.many:
                    cursor.executemany(statement.sql, statement.parameters)
                else:
                    cursor.execute(statement.sql, statement.parameters)
            drawn = conn.execute(
                text("UPDATE store_secrets SET value = :v WHERE name = :n"),
                {"v": key, "n": REF_KEY},
            )
            assert drawn.rowcount == 1
    finally:
        eng.dispose()


@pytest.fixture
def engine(request: pytest.FixtureRequest, db_url: str) -> Iterator[Engine]:
    """An engine on a migrated, empty store.

    The store's schema is what the migrations wrote on another empty store in
    this run (:func:`_migrate_by_copy`; tests/test_migrations.py runs them on
    empty stores), at a fraction of their cost.
    """
    _migrate_by_copy(request, db_url)
    eng = open_engine(StoreConfig(db_url))
    try:
        yield eng
    finally:
        eng.dispose()
