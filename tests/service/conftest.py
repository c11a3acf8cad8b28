"""Fixtures of the service tests: one ``promomail serve`` per test module and store."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.service_helpers import Server, Store, served_store, token


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, Server]]:
    """A store and a server on it, shared by a module's tests (a module may define its own)."""
    module = request.module.__name__.rpartition(".")[2]
    folder = tmp_path_factory.mktemp(f"{module}-{request.param}")
    yield from served_store(request.param, folder)


@pytest.fixture
def store(served: tuple[Store, Server]) -> Store:
    return served[0]


@pytest.fixture
def admin(served: tuple[Store, Server]) -> Iterator[httpx.Client]:
    """A client with an ``admin`` token."""
    store, server = served
    with server.client(token(store, "admin")) as client:
        yield client


@pytest.fixture
def checkout(served: tuple[Store, Server]) -> Iterator[httpx.Client]:
    """A client with a ``redeem`` token, as a checkout has."""
    store, server = served
    with server.client(token(store, "redeem")) as client:
        yield client
