"""The listening socket of ``promomail serve``."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from promomail.service.server import bind
from tests.support.service_helpers import PROMOMAIL, open_store, start_server, stop_cleanly, token


def test_accepted_connections_send_small_answers_at_once() -> None:
    listener = bind("127.0.0.1", 0)
    try:
        with socket.create_connection(listener.getsockname()[:2]) as _client:
            accepted, _ = listener.accept()
            with accepted:
                # No Nagle delay: headers and body written apart leave at once.
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()


def test_port_zero_gets_a_real_port() -> None:
    listener = bind("127.0.0.1", 0)
    try:
        assert listener.getsockname()[1] > 0
    finally:
        listener.close()


def test_an_unreachable_store_is_named_without_its_password() -> None:
    done = subprocess.run(
        [
            PROMOMAIL,
            "--db",
            "postgresql://bob:s3cretpw@127.0.0.1:1/nowhere",
            "serve",
            "--port",
            "0",
        ],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 1
    error = done.stderr.decode()
    assert error.startswith("Error: cannot open database postgresql://bob:***@127.0.0.1:1/nowhere")
    assert "s3cretpw" not in error
    assert "Traceback" not in error


def test_an_address_in_use_is_one_error_line(tmp_path: Path) -> None:
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [PROMOMAIL, "--db", f"sqlite:///{tmp_path / 'x.db'}", "serve", "--port", str(port)],
            capture_output=True,
            check=False,
            timeout=120,
        )
    finally:
        taken.close()
    assert done.returncode == 1
    assert done.stderr.decode().startswith(f"Error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in done.stderr.decode()


def test_a_store_that_stops_answering_is_a_503_without_its_url() -> None:
    import anyio
    import httpx

    from promomail.pools.store.db import StoreConfig, create_store_engine
    from promomail.service.app import ServiceConfig, create_app

    url = "postgresql://bob:s3cretpw@127.0.0.1:1/nowhere"
    engine = create_store_engine(StoreConfig(url, engine_options={"pool_timeout": 5}))
    app = create_app(ServiceConfig(url), engine=engine)

    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        # The host and port a default config listens on: its requests must name them.
        base_url = "http://127.0.0.1:8025"
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            headers = {"Authorization": "Bearer pm_" + "x" * 43}
            return [
                await client.get("/healthz"),
                await client.get("/api/v1/pools", headers=headers),
                await client.post("/api/v1/redemptions", headers=headers, json={"code": "A"}),
            ]

    try:
        answers = anyio.run(ask)
    finally:
        engine.dispose()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert "cannot be reached" in answer.json()["detail"]
        assert "s3cretpw" not in answer.text and "bob" not in answer.text


_ACCESS = re.compile(r"(GET|POST|PATCH|DELETE) (\S+) (\d{3}) \d+\.\d ms")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_serve_names_its_pages_and_store_and_logs_every_request(kind: str, tmp_path: Path) -> None:
    for store in open_store(kind, tmp_path):
        url = store.url
        if kind == "postgresql":
            # The test server trusts local clients: a password is accepted and ignored.
            url = make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)
        server = start_server(url)
        secret = token(store, "read")
        try:
            with server.client(secret) as client:
                asked = [
                    ("GET", "/healthz", client.get("/healthz")),
                    ("GET", "/api/v1/pools", client.get("/api/v1/pools")),
                    # A query a careless client put a secret in.
                    ("GET", "/api/v1/pools", client.get("/api/v1/pools?password=q-s3cret")),
                    ("GET", "/api/docs", client.get("/api/docs")),
                    ("GET", "/api/v1/nowhere", client.get("/api/v1/nowhere")),
                    ("GET", "/healthz", client.get("/healthz", headers={"Host": "evil.test"})),
                    ("POST", "/api/v1/redemptions", client.post("/api/v1/redemptions", json={})),
                ]
            with server.client("pm_" + "x" * 43) as stranger:
                asked.append(("GET", "/api/v1/pools", stranger.get("/api/v1/pools")))
        finally:
            stop_cleanly(server)
        statuses = [answer.status_code for _, _, answer in asked]
        assert statuses == [200, 200, 422, 200, 404, 421, 403, 401], statuses

        lines = server.stderr.splitlines()
        shown = url if kind == "sqlite" else url.replace(":s3cret-pw@", ":***@")
        assert lines[:4] == [
            f"promomail serve: listening on {server.url}",
            f"  preview page  {server.url}/",
            f"  API docs      {server.url}/api/docs",
            f"  store         {shown}",
        ]
        logged = [m.groups() for m in map(_ACCESS.fullmatch, lines[4:]) if m]
        assert logged == [(m, p, str(answer.status_code)) for m, p, answer in asked]
        for never in ("s3cret-pw", "q-s3cret", secret, "x" * 43, "Authorization"):
            assert never not in server.stderr, never
        assert not any("?" in line for line in lines[4:]), "no query string is logged"
