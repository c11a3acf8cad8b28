"""Holds and once-per-customer codes on a real ``promomail serve``, on SQLite and PostgreSQL.

The answers are compared with what ``hold --json`` prints: the service is a
front end of the same library.
"""

from __future__ import annotations

import httpx

from tests.support.service_helpers import (
    Store,
    cli_json,
    create_pool_over_api,
    problem,
)
from tests.support.store_helpers import snapshot


def test_a_checkout_holds_and_redeems(
    store: Store, admin: httpx.Client, checkout: httpx.Client
) -> None:
    create_pool_over_api(admin, "h-spring", ["HS-1", "HS-2"])

    created = checkout.post("/api/v1/holds", json={"code": "HS-1", "order": "o1", "seconds": 600})
    assert created.status_code == 201, created.text
    held = created.json()
    assert set(held) == {"ok", "code", "pool", "order", "expires_at", "replayed"}
    assert (held["pool"], held["order"], held["replayed"]) == ("h-spring", "o1", False)
    # The command line answers the same hold again, as a replay.
    assert cli_json(store.url, "hold", "HS-1", "--order", "o1", "--for", "30s") == {
        **held,
        "replayed": True,
    }
    replay = checkout.post("/api/v1/holds", json={"code": "HS-1", "order": "o1", "seconds": 60})
    assert replay.status_code == 200 and replay.json() == {**held, "replayed": True}
    assert admin.get("/api/v1/pools/h-spring").json()["held"] == 1

    reason = f"held by another order until {held['expires_at'].replace('T', ' ')} UTC"
    before = snapshot(store.engine)
    for path, body in (
        ("/api/v1/holds", {"code": "HS-1", "order": "o2"}),
        ("/api/v1/redemptions", {"code": "HS-1", "order": "o2"}),
        ("/api/v1/redemptions", {"code": "HS-1"}),
    ):
        refused = problem(checkout.post(path, json=body), 409)
        assert (refused["ok"], refused["reason"]) == (False, reason), path
    dry = checkout.get("/api/v1/codes/HS-1", params={"order": "o2"})
    assert dry.status_code == 200 and dry.json() == {"ok": False, "reason": reason}
    assert checkout.get("/api/v1/codes/HS-1", params={"order": "o1"}).json()["ok"] is True
    assert snapshot(store.engine) == before

    redeemed = checkout.post("/api/v1/redemptions", json={"code": "HS-1", "order": "o1"})
    assert redeemed.status_code == 201, redeemed.text
    assert admin.get("/api/v1/pools/h-spring").json()["held"] == 0
    gone = problem(checkout.post("/api/v1/holds", json={"code": "HS-1", "order": "o1"}), 409)
    assert gone["reason"] == "already redeemed"


def test_release_and_its_404(store: Store, admin: httpx.Client, checkout: httpx.Client) -> None:
    create_pool_over_api(admin, "h-release", ["HR-1"])
    assert checkout.post("/api/v1/holds", json={"code": "HR-1", "order": "o1"}).status_code == 201

    before = snapshot(store.engine)
    nothing = problem(
        checkout.post("/api/v1/holds/release", json={"code": "HR-1", "order": "o2"}), 404
    )
    assert nothing["reason"] == "order 'o2' holds nothing on code 'HR-1'"
    unknown = problem(
        checkout.post("/api/v1/holds/release", json={"code": "HR-NOPE", "order": "o1"}), 404
    )
    assert unknown["reason"] == "unknown code"
    assert snapshot(store.engine) == before

    released = checkout.post("/api/v1/holds/release", json={"code": "HR-1", "order": "o1"})
    assert released.status_code == 200, released.text
    assert set(released.json()) == {"ok", "code", "pool", "order", "released_at"}
    assert admin.get("/api/v1/pools/h-release").json()["held"] == 0
    again = checkout.post("/api/v1/holds/release", json={"code": "HR-1", "order": "o1"})
    problem(again, 404)
    assert checkout.post("/api/v1/redemptions", json={"code": "HR-1", "order": "o2"}).is_success


def test_every_refusal_of_a_hold(store: Store, admin: httpx.Client, checkout: httpx.Client) -> None:
    create_pool_over_api(admin, "h-refuse", ["HF-USED"])
    create_pool_over_api(admin, "h-shared", ["HF-SHARED"], multi_use=True)
    assert checkout.post("/api/v1/redemptions", json={"code": "HF-USED"}).status_code == 201

    before = snapshot(store.engine)
    for body, status, reason in (
        ({"code": "HF-NOPE"}, 404, "unknown code"),
        ({"code": "HF-USED", "pool": "h-nope"}, 404, "unknown pool 'h-nope'"),
        ({"code": "HF-USED"}, 409, "already redeemed"),
        ({"code": "HF-SHARED"}, 409, "multi-use codes need no hold"),
    ):
        refused = problem(checkout.post("/api/v1/holds", json={**body, "order": "o1"}), status)
        assert (refused["ok"], refused["reason"]) == (False, reason)
    for seconds in (29, 86_401, 0, -5):
        timed = {"code": "HF-USED", "order": "o1", "seconds": seconds}
        detail = problem(checkout.post("/api/v1/holds", json=timed), 422)["detail"]
        # The document's bounds (the library's MIN_HOLD and MAX_HOLD), checked first.
        assert detail in ("seconds: must be 30 or more", "seconds: must be 86400 or less")
    malformed: list[dict[str, object]] = [
        {"code": "HF-USED"},
        {"order": "o1"},
        {"code": "X", "order": "o", "until": 5},
    ]
    for wrong in malformed:
        problem(checkout.post("/api/v1/holds", json=wrong), 422)
    assert snapshot(store.engine) == before


def test_once_per_customer_pools(store: Store, admin: httpx.Client, checkout: httpx.Client) -> None:
    refused = problem(
        admin.post("/api/v1/pools", json={"name": "h-single", "once_per_customer": True}), 422
    )
    assert "once_per_customer applies only to multi_use pools" in refused["detail"]
    created = create_pool_over_api(
        admin, "h-once", ["HO-SHARED"], multi_use=True, once_per_customer=True
    )
    assert created["mode"] == "multi-use, once per customer"

    first = {"code": "HO-SHARED", "customer": "alice", "order": "o1"}
    assert checkout.post("/api/v1/redemptions", json=first).status_code == 201
    assert checkout.post("/api/v1/redemptions", json=first).status_code == 200
    second = problem(checkout.post("/api/v1/redemptions", json={**first, "order": "o2"}), 409)
    assert second["reason"] == "already redeemed by this customer"
    nameless = problem(
        checkout.post("/api/v1/redemptions", json={"code": "HO-SHARED", "order": "o3"}), 409
    )
    assert nameless["reason"] == "each customer may redeem this code once: name the customer"
    bob = {"code": "HO-SHARED", "customer": "bob", "order": "o4"}
    assert checkout.post("/api/v1/redemptions", json=bob).status_code == 201
    assert admin.get("/api/v1/pools/h-once").json()["redemptions"] == 2
