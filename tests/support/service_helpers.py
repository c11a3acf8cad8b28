"""A real ``promomail serve`` process for service tests, and stores that live as long as it.

The server is the installed console script beside ``sys.executable``, started
on port 0 (it prints the port it got), stopped with SIGTERM; the fixture
checks that it then exits 0. Stores are module-scoped here (one server per
test module and database), so each test uses pool ids and token names of
its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from promomail.pools.admin.tokens import create_token
from promomail.pools.store.db import StoreConfig, open_engine

PG_URL = os.environ.get("PROMOMAIL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("PROMOMAIL_REQUIRE_PG") == "1"
PROMOMAIL = str(Path(sys.executable).with_name("promomail"))
_LISTENING = re.compile(r"listening on (http://\S+)")
START_SECONDS = 60.0


def postgres_problem() -> str | None:
    try:
        engine = create_engine(
            StoreConfig(PG_URL).sqlalchemy_url, connect_args={"connect_timeout": 3}
        )
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except OperationalError as exc:
        return f"PostgreSQL at {PG_URL} does not answer: {str(exc.orig).strip()}"
    return None


def require_postgres() -> None:
    problem = postgres_problem()
    if problem:
        if REQUIRE_PG:
            pytest.fail(f"{problem} (PROMOMAIL_REQUIRE_PG=1)")
        pytest.skip(problem)


@dataclass
class Store:
    url: str
    engine: Engine
    kind: str


def _with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


def open_store(kind: str, folder: Path) -> Iterator[Store]:
    """A migrated, empty store on ``kind`` ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'promomail.db'}"
        engine = open_engine(StoreConfig(url))
        try:
            yield Store(url, engine, kind)
        finally:
            engine.dispose()
        return
    require_postgres()
    schema = f"s_{uuid.uuid4().hex[:16]}"
    admin = create_engine(StoreConfig(PG_URL).sqlalchemy_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _with_search_path(PG_URL, schema)
    engine = open_engine(StoreConfig(url))
    try:
        yield Store(url, engine, kind)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class Server:
    """One ``promomail serve`` process."""

    url: str
    process: subprocess.Popen[bytes]
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        status = self.process.wait(timeout)
        if self.reader is not None:
            self.reader.join(timeout)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return status

    @property
    def stderr(self) -> str:
        return "".join(self.log)


def start_server(
    db_url: str, *args: str, env: dict[str, str] | None = None, port: int = 0
) -> Server:
    """Start ``promomail --db URL serve --port 0 ARGS`` and wait until it listens."""
    process = subprocess.Popen(
        [PROMOMAIL, "--db", db_url, "serve", "--port", str(port), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stderr is not None
    log: list[str] = []
    found = threading.Event()
    address: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace")
            log.append(line)
            match = _LISTENING.search(line)
            if match and not found.is_set():
                address.append(match.group(1))
                found.set()
        found.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    if not found.wait(START_SECONDS) or not address:
        process.kill()
        process.wait()
        reader.join()
        process.stderr.close()
        raise AssertionError("promomail serve did not start:\n" + "".join(log))
    return Server(address[0], process, log, reader)


def stop_cleanly(server: Server) -> None:
    status = server.stop()
    assert status == 0, f"promomail serve exited {status}:\n{server.stderr}"
    assert "Traceback" not in server.stderr, server.stderr


def served_store(kind: str, folder: Path) -> Iterator[tuple[Store, Server]]:
    """A fresh store on ``kind`` and a real ``promomail serve`` on it, stopped
    cleanly (status 0, no traceback) when the caller is done."""
    for store in open_store(kind, folder):
        server = start_server(store.url)
        try:
            yield store, server
        finally:
            stop_cleanly(server)


def token(store: Store, scope: str, pools: Sequence[str] = (), name: str | None = None) -> str:
    return create_token(store.engine, name or f"t-{uuid.uuid4().hex[:10]}", scope, pools).token


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem document of a refused request, checked for its RFC 9457 fields."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    document: dict[str, Any] = response.json()
    assert document["status"] == status
    assert isinstance(document["title"], str) and document["title"]
    assert isinstance(document["type"], str) and document["type"]
    assert isinstance(document["detail"], str) and document["detail"]
    assert "Traceback" not in response.text
    return document


def upload(client: httpx.Client, pool_id: str, codes: Sequence[str]) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/pools/{pool_id}/codes",
        content=("\n".join(codes) + "\n").encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def create_pool_over_api(
    client: httpx.Client, pool_id: str, codes: Sequence[str] = (), **settings: Any
) -> dict[str, Any]:
    body = {"name": pool_id, "id": pool_id, "description": "for tests", "activate": True}
    response = client.post("/api/v1/pools", json={**body, **settings})
    assert response.status_code == 201, response.text
    if codes:
        upload(client, pool_id, codes)
    document: dict[str, Any] = response.json()
    return document


def cli_json(db_url: str, *args: str) -> Any:
    """``promomail --db URL ARGS --json`` as a real process: its one JSON document."""
    done = subprocess.run(
        [PROMOMAIL, "--db", db_url, *args, "--json"], capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)
