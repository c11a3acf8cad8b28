"""Stopping: SIGTERM/SIGINT stop new connections, let the request in flight finish, exit 0."""

from __future__ import annotations

import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text

from promomail.pools.admin.lifecycle import show_pool
from promomail.pools.store.db import StoreConfig
from tests.support.service_helpers import (
    Server,
    Store,
    create_pool_over_api,
    open_store,
    start_server,
    token,
)

POLL_SECONDS = 0.02
WAIT_SECONDS = 60.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from open_store(request.param, tmp_path)


def _wait_for(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(POLL_SECONDS)


def _upload_in_progress(store: Store, application: str) -> bool:
    """Whether the server is inside the upload's transaction (it holds the write lock)."""
    if store.kind == "sqlite":
        database = store.engine.url.database
        assert database is not None
        probe = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            return True
        finally:
            probe.close()
    with store.engine.connect() as conn:
        busy = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = :name AND state LIKE 'idle in transaction%'"
            ),
            {"name": application},
        ).scalar_one()
    return bool(busy)


def _refuses_connections(server: Server) -> bool:
    address = urlsplit(server.url)
    assert address.hostname is not None and address.port is not None
    try:
        with socket.create_connection((address.hostname, address.port), timeout=5):
            return False
    except OSError:
        return True


def _server_url(store: Store, application: str) -> str:
    if store.kind == "sqlite":
        return store.url
    StoreConfig(store.url)  # a valid URL
    return f"{store.url}&application_name={application}"


def test_sigterm_lets_the_request_in_flight_finish(store: Store) -> None:
    application = f"shutdown-{uuid.uuid4().hex[:8]}"
    server = start_server(_server_url(store, application))
    secret = token(store, "admin")
    with server.client(secret) as admin:
        create_pool_over_api(admin, "slow", [])
    release = threading.Event()
    answers: list[httpx.Response] = []
    first = b"".join(b"SLOW-%05d\n" % i for i in range(1000))
    rest = b"".join(b"SLOW-%05d\n" % i for i in range(1000, 2000))

    def body() -> Iterator[bytes]:
        yield first
        assert release.wait(WAIT_SECONDS)
        yield rest

    def send() -> None:
        with server.client(secret) as client:
            answers.append(
                client.post(
                    "/api/v1/pools/slow/codes",
                    content=body(),
                    headers={"Content-Type": "text/plain"},
                )
            )

    sender = threading.Thread(target=send)
    sender.start()
    try:
        _wait_for(lambda: _upload_in_progress(store, application), "the upload to start")
        server.process.send_signal(signal.SIGTERM)
        _wait_for(lambda: _refuses_connections(server), "the server to stop listening")
        assert server.process.poll() is None, "it waits for the request in flight"
    finally:
        release.set()
        sender.join(WAIT_SECONDS)
    assert server.process.wait(WAIT_SECONDS) == 0, server.stderr
    server.stop()
    assert "Traceback" not in server.stderr
    [answer] = answers
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2000
    assert show_pool(store.engine, "slow").counts.total == 2000


def test_sigint_stops_with_status_zero(store: Store) -> None:
    server = start_server(store.url)
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
    assert server.stop(signal.SIGINT) == 0, server.stderr
    assert "Traceback" not in server.stderr
