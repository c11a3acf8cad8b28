"""Every route of the API against a real ``promomail serve``, on SQLite and PostgreSQL.

The answers are compared with what the command line prints for the same
command (``--json``): the service is a front end of the same library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from promomail.pools.admin.tokens import list_tokens
from tests.support.cli_helpers import Cli
from tests.support.paths import REPO_ROOT
from tests.support.service_helpers import (
    Server,
    Store,
    create_pool_over_api,
    problem,
    upload,
)
from tests.support.store_helpers import snapshot

SAMPLES = REPO_ROOT / "sample_templates"


def test_healthz_needs_no_token(served: tuple[Store, Server]) -> None:
    with served[1].client() as client:
        answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "store": "reachable"}


def test_pool_life_cycle(store: Store, admin: httpx.Client) -> None:
    created = admin.post("/api/v1/pools", json={"name": "Life Cycle 30%"})
    assert created.status_code == 201
    assert created.json()["id"] == "life-cycle-30"
    assert created.json()["status"] == "draft"
    detail = problem(admin.post("/api/v1/pools", json={"name": "Life Cycle 30%"}), 409)["detail"]
    assert "'life-cycle-30' already exists" in detail
    refused = problem(admin.post("/api/v1/pools/life-cycle-30/activate"), 409)
    assert "has no description" in refused["detail"]
    edited = admin.patch("/api/v1/pools/life-cycle-30", json={"description": "thirty off"})
    assert edited.status_code == 200
    assert edited.json()["description"] == "thirty off"
    assert problem(admin.patch("/api/v1/pools/life-cycle-30", json={}), 422)["detail"].startswith(
        "nothing to change"
    )
    assert admin.post("/api/v1/pools/life-cycle-30/activate").json()["status"] == "active"
    ids = [p["id"] for p in admin.get("/api/v1/pools").json()["items"]]
    assert "life-cycle-30" in ids
    assert admin.get("/api/v1/pools").json()["next"] is None
    assert admin.post("/api/v1/pools/life-cycle-30/archive").json()["status"] == "archived"
    deleted = admin.delete("/api/v1/pools/life-cycle-30")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert "does not exist" in problem(admin.get("/api/v1/pools/life-cycle-30"), 404)["detail"]


def test_pool_settings_are_checked_by_the_library(store: Store, admin: httpx.Client) -> None:
    before = snapshot(store.engine)
    both = {"name": "Bad Mode", "multi_use": True, "require_issued": True}
    assert "exclude each other" in problem(admin.post("/api/v1/pools", json=both), 422)["detail"]
    bad_id = {"name": "x", "id": "Not Valid"}
    assert (
        "'Not Valid' is not valid"
        in problem(admin.post("/api/v1/pools", json=bad_id), 422)["detail"]
    )
    unknown = problem(admin.post("/api/v1/pools", json={"name": "x", "colour": "red"}), 422)
    assert "colour" in unknown["detail"]
    assert snapshot(store.engine) == before


def test_pool_show_is_the_command_document(store: Store, admin: httpx.Client) -> None:
    create_pool_over_api(admin, "shown", ["S-1", "S-2", "S-3"])
    answer = admin.get("/api/v1/pools/shown")
    assert answer.status_code == 200
    assert answer.json() == Cli(store.url).json("pool", "show", "shown")
    assert answer.json()["imports"][0]["accepted"] == 3
    listed = {p["id"]: p for p in admin.get("/api/v1/pools").json()["items"]}
    assert listed["shown"] == next(
        p for p in Cli(store.url).json("pool", "list") if p["id"] == "shown"
    )


def test_upload_reports_and_options(store: Store, admin: httpx.Client) -> None:
    create_pool_over_api(admin, "uploads")
    report = upload(admin, "uploads", ["U-1", "U-2", "U-2"])
    assert (report["accepted"], report["duplicates"], report["total"]) == (2, 1, 2)
    csv_body = b"code,available_till\nU-3,2099-01-01\nU-4,2099-01-01\n"
    as_csv = admin.post(
        "/api/v1/pools/uploads/codes",
        content=csv_body,
        headers={"Content-Type": "text/csv; charset=utf-8"},
        params={"file": "april.csv"},
    )
    assert as_csv.status_code == 200
    assert (as_csv.json()["format"], as_csv.json()["file"], as_csv.json()["accepted"]) == (
        "csv",
        "april.csv",
        2,
    )
    strip = admin.post(
        "/api/v1/pools/uploads/codes",
        content=b"  U-5  \n",
        headers={"Content-Type": "text/plain"},
        params={"whitespace": "strip"},
    )
    assert strip.json()["accepted"] == 1
    before = snapshot(store.engine)
    rejected = admin.post(
        "/api/v1/pools/uploads/codes",
        content=b"U-6\n U-7\nU-8\n\n",
        headers={"Content-Type": "text/plain"},
    )
    document = problem(rejected, 422)
    assert document["stored"] is False
    assert document["rejected"] == [
        {"line": 2, "reason": "leading or trailing whitespace"},
        {"line": 4, "reason": "empty line"},
    ]
    assert "request body, line 2" in document["detail"]
    # The way out, named as the query parameters are.
    assert document["detail"].endswith(
        "(whitespace strip (trims) or keep (stores it as it is) accepts whitespace at either "
        "end of a code; skip_invalid stores the valid lines and reports the rest)"
    )
    assert document["total"] == 5
    assert snapshot(store.engine) == before
    skipped = admin.post(
        "/api/v1/pools/uploads/codes",
        content=b"U-6\n U-7\nU-8\n",
        headers={"Content-Type": "text/plain"},
        params={"skip_invalid": "true"},
    )
    assert skipped.status_code == 200
    assert skipped.json()["accepted"] == 2
    assert skipped.json()["rejected_count"] == 1
    history = admin.get("/api/v1/pools/uploads").json()["imports"]
    assert [h["file"] for h in history] == [
        "request body",
        "april.csv",
        "request body",
        "request body",
    ]


def test_generate_and_void(store: Store, admin: httpx.Client) -> None:
    create_pool_over_api(admin, "generated", low_stock=3)
    made = admin.post(
        "/api/v1/pools/generated/codes/generate", json={"count": 20, "length": 8, "prefix": "G-"}
    )
    assert made.status_code == 200
    assert (made.json()["generated"], made.json()["total"]) == (20, 20)
    codes = [c["code"] for c in Cli(store.url).json("codes", "list", "generated")]
    assert all(c.startswith("G-") and len(c) == 10 for c in codes)
    too_many = admin.post(
        "/api/v1/pools/generated/codes/generate", json={"count": 1000, "length": 1}
    )
    assert "do not fit comfortably in pool 'generated'" in problem(too_many, 422)["detail"]
    voided = admin.post(f"/api/v1/pools/generated/batches/{made.json()['batch']}/void")
    assert voided.status_code == 200
    assert (voided.json()["voided"], voided.json()["kept_issued"]) == (20, 0)
    assert [a["pool"] for a in voided.json()["low_stock"]] == ["generated"]
    # What does not exist is a 404, as for a pool: nothing to be in conflict with.
    missing = problem(admin.post("/api/v1/pools/generated/batches/999999/void"), 404)
    assert "no import batch 999999" in missing["detail"]


def test_redemption_at_checkout(store: Store, admin: httpx.Client) -> None:
    create_pool_over_api(admin, "checkout", ["CHK-1", "CHK-2"])
    check = admin.get("/api/v1/codes/CHK-1")
    assert check.status_code == 200
    assert check.json()["ok"] is True
    before = snapshot(store.engine)
    assert admin.get("/api/v1/codes/CHK-1", params={"order": "o-1"}).json()["ok"] is True
    assert snapshot(store.engine) == before, "a dry run writes nothing"
    body = {"code": "CHK-1", "customer": "buyer-1", "order": "o-1"}
    first = admin.post("/api/v1/redemptions", json=body)
    assert first.status_code == 201
    assert first.json() == {
        "ok": True,
        "code": "CHK-1",
        "pool": "checkout",
        "issued_to": None,
        "mailing": None,
        "redeemed_by": "buyer-1",
        "order": "o-1",
        "replayed": False,
    }
    replay = admin.post("/api/v1/redemptions", json=body)
    assert replay.status_code == 200
    assert replay.json() == {**first.json(), "replayed": True}
    other = problem(admin.post("/api/v1/redemptions", json={**body, "order": "o-2"}), 409)
    assert (other["ok"], other["reason"]) == (False, "already redeemed")
    assert "'CHK-1'" in other["detail"]
    dry = admin.get("/api/v1/codes/CHK-1")
    assert dry.status_code == 200
    assert dry.json() == {"ok": False, "reason": "already redeemed"}
    unknown = problem(admin.post("/api/v1/redemptions", json={"code": "NOPE"}), 404)
    assert (unknown["ok"], unknown["reason"]) == (False, "unknown code")
    assert problem(admin.get("/api/v1/codes/NOPE"), 404)["reason"] == "unknown code"
    rolled = admin.post("/api/v1/redemptions/rollback", json={"code": "CHK-1", "order": "o-1"})
    assert rolled.status_code == 200
    assert rolled.json()["order"] == "o-1"
    again = problem(
        admin.post("/api/v1/redemptions/rollback", json={"code": "CHK-1", "order": "o-1"}), 404
    )
    assert "no redemption for order 'o-1'" in again["detail"]
    assert admin.post("/api/v1/redemptions", json={**body, "order": "o-3"}).status_code == 201


def test_rollback_without_an_order(store: Store, admin: httpx.Client) -> None:
    create_pool_over_api(admin, "till", ["TILL-1"])
    create_pool_over_api(admin, "shared-till", ["SHARED-1"], multi_use=True)
    assert admin.post("/api/v1/redemptions", json={"code": "TILL-1"}).status_code == 201
    for customer in ("c1", "c2"):
        body = {"code": "SHARED-1", "customer": customer}
        assert admin.post("/api/v1/redemptions", json=body).status_code == 201

    rolled = admin.post("/api/v1/redemptions/rollback", json={"code": "TILL-1"})
    assert rolled.status_code == 200
    assert (rolled.json()["order"], rolled.json()["redemptions"]) == (None, 0)
    gone = problem(admin.post("/api/v1/redemptions/rollback", json={"code": "TILL-1"}), 404)
    assert gone["detail"] == "code 'TILL-1' has no redemption made without an order to roll back"
    before = snapshot(store.engine)
    ambiguous = problem(admin.post("/api/v1/redemptions/rollback", json={"code": "SHARED-1"}), 409)
    assert "2 live redemptions made without an order" in ambiguous["detail"]
    assert snapshot(store.engine) == before
    schema = admin.get("/api/v1/openapi.json").json()["components"]["schemas"]
    assert schema["RollbackRequest"]["required"] == ["code"]


def _render(store: Store, tmp_path: Path, mailing: str, ids: list[str]) -> None:
    template = tmp_path / "hello.j2"
    template.write_text("Hello {{ client.id }}: {{ client.promocode('history') }}\n")
    recipients = tmp_path / f"{mailing}.csv"
    recipients.write_text("id\n" + "".join(f"{i}\n" for i in ids))
    result = Cli(store.url)(
        "render",
        str(template),
        "--recipients",
        str(recipients),
        "--mailing",
        mailing,
        "--out",
        str(tmp_path / f"{mailing}.jsonl"),
    )
    assert result.exit_code == 0, result.stderr


def _all_pages(client: httpx.Client, path: str, **params: Any) -> list[Any]:
    items: list[Any] = []
    after: str | None = None
    while True:
        query = {**params, **({"after": after} if after else {})}
        page = client.get(path, params=query)
        assert page.status_code == 200, page.text
        items.extend(page.json()["items"])
        after = page.json()["next"]
        if after is None:
            return items


def test_history_routes(store: Store, admin: httpx.Client, tmp_path: Path) -> None:
    create_pool_over_api(admin, "history", [f"H-{i}" for i in range(10)])
    _render(store, tmp_path, "hist-1", ["h-ann", "h-bob", "h-cy"])
    _render(store, tmp_path, "hist-2", ["h-ann", "h-dee"])
    run = Cli(store.url)

    customer = admin.get("/api/v1/customers/h-ann").json()
    command = run.json("customer", "h-ann")
    assert customer["customer"] == "h-ann"
    assert customer["items"] == command["issuances"]
    assert customer["redemptions"] == command["redemptions"]
    paged = _all_pages(admin, "/api/v1/customers/h-ann", limit=1)
    assert paged == command["issuances"]

    segment = _all_pages(admin, "/api/v1/segments", issued_from="history", limit=2)
    assert segment == run.json("segment", "--issued-from", "history")["ids"]
    twice = admin.get("/api/v1/segments", params={"issued_from": "history", "min_issued": 2})
    assert twice.json() == {"items": ["h-ann"], "next": None}
    assert (
        "does not exist"
        in problem(admin.get("/api/v1/segments", params={"issued_from": "nope"}), 404)["detail"]
    )
    assert (
        "more than"
        in problem(admin.get("/api/v1/segments", params={"min_issued": 3, "max_issued": 1}), 422)[
            "detail"
        ]
    )

    mailings = admin.get("/api/v1/mailings").json()
    assert [m["id"] for m in mailings["items"] if m["id"].startswith("hist-")] == [
        "hist-1",
        "hist-2",
    ]
    shown = admin.get("/api/v1/mailings/hist-1").json()
    assert shown == run.json("mailing", "show", "hist-1")
    assert (shown["codes_issued"], shown["status_text"], shown["cancelled_at"]) == (
        3,
        "finished",
        None,
    )
    assert "'nope' does not exist" in problem(admin.get("/api/v1/mailings/nope"), 404)["detail"]

    issued = _all_pages(admin, "/api/v1/issuances", pool="history", limit=2)
    assert [(i["customer"], i["mailing"]) for i in issued] == [
        ("h-ann", "hist-1"),
        ("h-bob", "hist-1"),
        ("h-cy", "hist-1"),
        ("h-ann", "hist-2"),
        ("h-dee", "hist-2"),
    ]
    export = tmp_path / "export.csv"
    run("export", "issuances", "--pool", "history", "--out", str(export))
    exported = export.read_text().splitlines()[1:]
    assert [i["code"] for i in issued] == [line.split(",")[2] for line in exported]
    one = admin.get("/api/v1/issuances", params={"mailing": "hist-2"}).json()
    assert [i["customer"] for i in one["items"]] == ["h-ann", "h-dee"]
    # Not a cursor's form: the document's pattern; of its form, but made up: the library.
    assert (
        "cursor" in problem(admin.get("/api/v1/issuances", params={"after": "%%"}), 422)["detail"]
    )
    assert (
        "cursor" in problem(admin.get("/api/v1/issuances", params={"after": "AAAA"}), 400)["detail"]
    )
    assert problem(admin.get("/api/v1/issuances", params={"limit": 0}), 422)


def test_tokens_from_the_command_line(store: Store, served: tuple[Store, Server]) -> None:
    run = Cli(store.url)
    made = run.json("token", "create", "cli-reader", "--scope", "read")
    assert set(made) == {"name", "token", "scope", "pools"}
    assert (made["name"], made["scope"], made["pools"]) == ("cli-reader", "read", [])
    with served[1].client(made["token"]) as client:
        assert client.get("/api/v1/pools").status_code == 200
        assert client.post("/api/v1/pools", json={"name": "x"}).status_code == 403
        listed = {t["name"]: t for t in run.json("token", "list")}
        assert listed["cli-reader"]["revoked_at"] is None
        assert made["token"] not in json.dumps(listed)
        assert made["token"] not in json.dumps([t.as_dict() for t in list_tokens(store.engine)])
        assert run("token", "revoke", "cli-reader").exit_code == 0
        problem(client.get("/api/v1/pools"), 401)
    refused = run("token", "create", "cli-reader", "--scope", "read")
    assert refused.exit_code == 1
    assert "already exists" in refused.stderr
    unknown_pool = run("token", "create", "cli-x", "--scope", "read", "--pool", "nope")
    assert unknown_pool.exit_code == 1
    assert "pool 'nope' does not exist" in unknown_pool.stderr


def test_secret_is_stored_only_as_a_hash(store: Store) -> None:
    made = Cli(store.url).json("token", "create", "hashed", "--scope", "admin")
    with store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM service_tokens")]
    assert made["token"] not in repr(rows)
    assert any(len(str(cell)) == 64 for row in rows for cell in row)


def test_unknown_route_is_a_problem(admin: httpx.Client) -> None:
    problem(admin.get("/api/v1/nothing-here"), 404)
    problem(admin.put("/api/v1/pools"), 405)


def test_the_preview_page_forbids_scripts_but_its_own(served: tuple[Store, Server]) -> None:
    with served[1].client() as client:
        page = client.get("/")
    assert page.status_code == 200
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    assert policy["script-src"] == "'self'"
    assert policy["default-src"] == "'none'"
    assert "no templates" in page.text
