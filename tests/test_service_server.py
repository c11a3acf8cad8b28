"""The listening socket of ``promomail serve``."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from service_helpers import PROMOMAIL

from service.server import bind


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

    from pools.store.db import StoreConfig, create_store_engine
    from service.app import ServiceConfig, create_app

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
