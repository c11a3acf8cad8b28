"""The service's answer to each kind of store failure: status, and no server text."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import FastAPI

from promomail.pools.errors import DatabaseFailure, StoreConflict, StoreUnavailable
from promomail.service.problems import MEDIA_TYPE, install

SERVER_TEXT = "database postgresql://bob:***@db.internal:5432/shop: something broke"


@pytest.mark.parametrize(
    ("failure", "status"),
    [(StoreUnavailable, 503), (StoreConflict, 409), (DatabaseFailure, 500)],
)
def test_a_store_failure_is_logged_and_answered_without_its_text(
    failure: type[DatabaseFailure], status: int, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    install(app)

    @app.get("/fails")
    def fails() -> None:
        raise failure(SERVER_TEXT)

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/fails")

    with caplog.at_level(logging.ERROR, logger="promomail.service"):
        answer = asyncio.run(ask())
    assert answer.status_code == status
    assert answer.headers["content-type"] == MEDIA_TYPE
    assert "db.internal" not in answer.text
    assert answer.json()["status"] == status
    assert SERVER_TEXT in caplog.text
