"""Two ``promomail serve`` processes on one PostgreSQL store, 32 checkouts at once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.support.service_helpers import (
    Server,
    Store,
    create_pool_over_api,
    open_store,
    start_server,
    stop_cleanly,
    token,
)

CLIENTS = 32


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Store, list[Server]]]:
    for store in open_store("postgresql", tmp_path):
        started = [start_server(store.url), start_server(store.url)]
        try:
            yield store, started
        finally:
            for server in started:
                stop_cleanly(server)


def _race(
    servers: list[Server],
    secret: str,
    bodies: list[dict[str, str]],
    path: str = "/api/v1/redemptions",
) -> list[httpx.Response]:
    """Each body from its own client (alternating servers), all posted to ``path`` at once."""
    clients = [
        servers[i % len(servers)].client(secret, limits=httpx.Limits(max_connections=1))
        for i in range(len(bodies))
    ]
    for client in clients:  # connected before the start
        assert client.get("/healthz").status_code == 200
    barrier = threading.Barrier(len(bodies))
    answers: list[httpx.Response | None] = [None] * len(bodies)

    def checkout(index: int) -> None:
        barrier.wait()
        answers[index] = clients[index].post(path, json=bodies[index])

    threads = [threading.Thread(target=checkout, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for client in clients:
        client.close()
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def _redemptions(store: Store, code: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM redemptions r JOIN codes c ON c.id = r.code_id "
                    "WHERE c.code = :code"
                ),
                {"code": code},
            ).scalar_one()
        )


def test_one_code_many_orders_redeems_once(servers: tuple[Store, list[Server]]) -> None:
    store, started = servers
    secret = token(store, "redeem")
    with started[0].client(token(store, "admin")) as admin:
        create_pool_over_api(admin, "race", ["RACE-1"])
    bodies = [
        {"code": "RACE-1", "customer": f"c{i}", "order": f"order-{i}"} for i in range(CLIENTS)
    ]
    answers = _race(started, secret, bodies)
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {201: 1, 409: CLIENTS - 1}, [a.text for a in answers]
    refusals = {answer.json()["reason"] for answer in answers if answer.status_code == 409}
    assert refusals == {"already redeemed"}
    assert _redemptions(store, "RACE-1") == 1


def test_one_code_one_order_replays(servers: tuple[Store, list[Server]]) -> None:
    store, started = servers
    secret = token(store, "redeem")
    with started[1].client(token(store, "admin")) as admin:
        create_pool_over_api(admin, "replay", ["REPLAY-1"])
    body = {"code": "REPLAY-1", "customer": "buyer", "order": "order-1"}
    answers = _race(started, secret, [body] * CLIENTS)
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {201: 1, 200: CLIENTS - 1}, [a.text for a in answers]
    created = next(a.json() for a in answers if a.status_code == 201)
    assert created["replayed"] is False
    for answer in answers:
        assert answer.json() == {**created, "replayed": answer.status_code == 200}
    assert _redemptions(store, "REPLAY-1") == 1


def test_one_code_many_orders_one_hold_and_the_holder_redeems(
    servers: tuple[Store, list[Server]],
) -> None:
    store, started = servers
    secret = token(store, "redeem")
    with started[0].client(token(store, "admin")) as admin:
        create_pool_over_api(admin, "holds", ["HOLD-1"])
    bodies = [{"code": "HOLD-1", "order": f"order-{i}"} for i in range(CLIENTS)]

    holds = _race(started, secret, bodies, "/api/v1/holds")

    statuses = Counter(answer.status_code for answer in holds)
    assert statuses == {201: 1, 409: CLIENTS - 1}, [a.text for a in holds]
    held = next(a.json() for a in holds if a.status_code == 201)
    until = held["expires_at"].replace("T", " ")
    refusals = {answer.json()["reason"] for answer in holds if answer.status_code == 409}
    assert refusals == {f"held by another order until {until} UTC"}

    # The holder's redemption and every other order's, at the same moment.
    redemptions = _race(started, secret, bodies)

    statuses = Counter(answer.status_code for answer in redemptions)
    assert statuses == {201: 1, 409: CLIENTS - 1}, [a.text for a in redemptions]
    winner = next(a.json() for a in redemptions if a.status_code == 201)
    assert winner["order"] == held["order"]
    assert _redemptions(store, "HOLD-1") == 1
