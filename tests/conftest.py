"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``PROMOMAIL_TEST_PG`` (default: the local server's
``test`` database). Each test gets a schema of its own, named in the URL's
``search_path``, so tests can run in parallel and in subprocesses. Where no
server answers the PostgreSQL cases skip, unless ``PROMOMAIL_REQUIRE_PG=1``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from pools.after_sending.references import REF_KEY
from pools.store.db import StoreConfig, open_engine, sqlite_file

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


@pytest.fixture
def engine(db_url: str, migrated_sqlite: bytes) -> Iterator[Engine]:
    """An engine on a migrated, empty store.

    An empty SQLite store becomes a copy of :func:`migrated_sqlite` first, the
    same file the migrations would write (tests/test_migrations.py runs them
    on empty stores), at a fraction of the cost; its key for delivery
    references is drawn anew, as the migration draws one for every store.
    """
    path = sqlite_file(db_url)
    if path is not None and path.stat().st_size == 0:
        path.write_bytes(migrated_sqlite)
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            drawn = conn.execute(
                "UPDATE store_secrets SET value = ? WHERE name = ?",
                (os.urandom(32).hex(), REF_KEY),
            )
            assert drawn.rowcount == 1
    eng = open_engine(StoreConfig(db_url))
    try:
        yield eng
    finally:
        eng.dispose()
