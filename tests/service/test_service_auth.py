"""Invariant 9: no request acts beyond its token's scope and pools.

The cases are generated from the server's own OpenAPI document: every
operation in it, with every kind of token (none, unknown, revoked, each
scope, each scope limited to one pool). A route added later is covered
without touching this file.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import Engine

from promomail.pools.admin.tokens import create_token, permits, revoke_token
from promomail.pools.choices import Scope
from promomail.pools.errors import TokenError
from promomail.pools.store.db import StoreConfig, open_engine
from promomail.service import problems
from promomail.service.app import ServiceConfig, create_app
from promomail.service.auth import Open, ScopedRoute, ScopedRouter
from promomail.service.bodies import BODY_LIMIT
from tests.support.cli_helpers import Cli
from tests.support.service_helpers import (
    Server,
    Store,
    create_pool_over_api,
    open_store,
    served_store,
    token,
)

OWN, OTHER, ABSENT = "mx-own", "mx-other", "mx-absent"
#: A typo of OTHER: a token that cannot see OTHER must not be told of it.
OTHER_TYPO = "mx-othr"
OWN_CODE, OTHER_CODE, ABSENT_CODE = "MXOWN-1", "MXOTHER-1", "MX-ABSENT"
METHODS = ("get", "post", "patch", "put", "delete")
#: Scopes a token may be limited to pools with (an events token may not).
LIMITABLE = [scope for scope in Scope if scope is not Scope.EVENTS]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, Server, dict[str, str]]]:
    folder = tmp_path_factory.mktemp(f"auth-{request.param}")
    for store, server in served_store(request.param, folder):
        tokens = {
            scope.value: create_token(store.engine, f"all-{scope.value}", scope).token
            for scope in Scope
        }
        with server.client(tokens["admin"]) as admin:
            create_pool_over_api(admin, OWN, [OWN_CODE])
            create_pool_over_api(admin, OTHER, [OTHER_CODE])
        for scope in LIMITABLE:
            tokens[f"{scope.value}@{OWN}"] = create_token(
                store.engine, f"own-{scope.value}", scope, [OWN]
            ).token
        tokens["revoked"] = create_token(store.engine, "gone", Scope.ADMIN).token
        revoke_token(store.engine, "gone")
        tokens["unknown"] = "pm_" + "x" * 43
        yield store, server, tokens


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def _request(
    document: dict[str, Any], method: str, path: str, operation: dict[str, Any], target: str
) -> dict[str, Any]:
    """The request for one operation on ``target``: "absent" (nothing there), "other",
    or "typo" (a pool id one letter off "other")."""
    pool = {"absent": ABSENT, "other": OTHER, "typo": OTHER_TYPO}[target]
    code = {"absent": ABSENT_CODE, "other": OTHER_CODE, "typo": ABSENT_CODE}[target]
    values = {
        "pool_id": pool,
        "code": code,
        "batch": "1",
        "customer_id": "mx-cust",
        "provider": "sendgrid",
    }
    url = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "mx-none"), path)
    request: dict[str, Any] = {"method": method, "url": url}
    body = operation.get("requestBody")
    if body is None:
        return request
    content = body["content"]
    if "application/json" not in content:
        kind = next(iter(content))
        request["content"] = b"MX-NEW-1\n"
        request["headers"] = {"Content-Type": kind}
        return request
    schema = _resolve(document, content["application/json"]["schema"])
    fields: dict[str, Any] = {}
    for name in schema.get("required", []):
        kind = _resolve(document, schema["properties"][name]).get("type")
        fields[name] = code if name == "code" else (1 if kind == "integer" else f"mx {name}")
    if "pool" in schema.get("properties", {}):
        fields["pool"] = pool
    request["json"] = fields
    return request


def _same_answer(first: httpx.Response, second: httpx.Response) -> bool:
    def shape(answer: httpx.Response) -> tuple[int, str]:
        text = answer.text
        for name in (OTHER, ABSENT, OTHER_CODE, ABSENT_CODE):
            text = text.replace(name, "NAME")
        return answer.status_code, text

    return shape(first) == shape(second)


def test_every_operation_with_every_token(served: tuple[Store, Server, dict[str, str]]) -> None:
    _store, server, tokens = served
    with server.client() as anonymous:
        document = anonymous.get("/api/v1/openapi.json").json()
    operations = _operations(document)
    assert len(operations) >= 18
    paths = {path for _method, path, _operation in operations}
    assert {"/api/v1/events/promomail", "/api/v1/events/{provider}"} <= paths
    assert {"/api/v1/holds", "/api/v1/holds/release"} <= paths
    checked = 0
    for method, path, operation in operations:
        needs = operation["x-scope"]
        if needs == Open.PUBLIC:
            with server.client() as anonymous:
                assert anonymous.request(**_request(document, method, path, operation, "absent"))
            continue
        if needs == Open.SIGNED:
            # A service's own signature, not a token: every token (or none) is
            # answered alike, here "not configured" (this server has no keys).
            absent = _request(document, method, path, operation, "absent")
            for kind in ("none", "unknown", "revoked", *(s.value for s in Scope)):
                with server.client(tokens.get(kind)) as client:
                    answer = client.request(**absent)
                assert answer.status_code == 404, (kind, method, path, answer.text)
                assert "is configured" in answer.json()["detail"], answer.text
                checked += 1
            continue
        scope_needed = Scope(needs)
        absent = _request(document, method, path, operation, "absent")
        for kind in ("none", "unknown", "revoked"):
            with server.client(tokens.get(kind)) as client:
                answer = client.request(**absent)
            assert answer.status_code == 401, (kind, method, path, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
            checked += 1
        for held in Scope:
            allowed = permits(held, scope_needed, reading=method == "GET")
            if held is Scope.EVENTS:
                # Not only as permits() says: as SPEC 7 says, in so many words.
                assert allowed == (method == "POST" and path == "/api/v1/events/promomail")
            with server.client(tokens[held.value]) as client:
                answer = client.request(**absent)
            if allowed:
                assert answer.status_code not in (401, 403), (held, method, path, answer.text)
            else:
                assert answer.status_code == 403, (held, method, path, answer.text)
                assert f"needs scope {scope_needed.value!r}" in answer.json()["detail"]
            if held not in LIMITABLE:
                continue
            with server.client(tokens[f"{held.value}@{OWN}"]) as client:
                limited_absent = client.request(**absent)
                limited_other = client.request(
                    **_request(document, method, path, operation, "other")
                )
            if not allowed:
                assert limited_absent.status_code == 403
                assert limited_other.status_code == 403
            elif method == "POST" and path == "/api/v1/pools":
                assert limited_other.status_code == 403, limited_other.text
                assert "cannot create pools" in limited_other.json()["detail"]
            else:
                # Another pool (or its code) is answered exactly like one that does not exist.
                assert _same_answer(limited_other, limited_absent), (
                    held,
                    method,
                    path,
                    limited_other.text,
                    limited_absent.text,
                )
                other = _request(document, method, path, operation, "other")
                if OTHER in str(other) or OTHER_CODE in str(other):
                    assert limited_other.status_code not in (200, 201, 204, 401, 403), (
                        held,
                        method,
                        path,
                        limited_other.text,
                    )
            checked += 3
    assert checked > 100


def test_did_you_mean_suggests_only_pools_the_token_sees(
    served: tuple[Store, Server, dict[str, str]],
) -> None:
    _store, server, tokens = served
    with server.client(tokens["read"]) as client:
        shown = client.get(f"/api/v1/pools/{OTHER_TYPO}")
        assert shown.status_code == 404
        # The closest first.
        assert shown.json()["detail"].startswith(
            f"pool {OTHER_TYPO!r} does not exist (did you mean {OTHER!r}"
        )
        segment = client.get("/api/v1/segments", params={"issued_from": OTHER_TYPO})
        assert f"did you mean {OTHER!r}" in segment.json()["detail"]
    with server.client() as anonymous:
        document = anonymous.get("/api/v1/openapi.json").json()
    queries = [
        ("GET", "/api/v1/segments", {"issued_from": OTHER_TYPO}),
        ("GET", "/api/v1/issuances", {"pool": OTHER_TYPO}),
    ]
    asked = 0
    for scope in LIMITABLE:
        with server.client(tokens[f"{scope.value}@{OWN}"]) as client:
            answers = [
                client.request(**_request(document, method, path, operation, "typo"))
                for method, path, operation in _operations(document)
                if operation["x-scope"] not in (Open.PUBLIC, Open.SIGNED)
            ]
            answers += [client.request(m, url, params=params) for m, url, params in queries]
        for answer in answers:
            assert OTHER not in answer.text, (scope, answer.request.url, answer.text)
            asked += 1
    assert asked > 40


def test_limited_tokens_see_their_pools_only(served: tuple[Store, Server, dict[str, str]]) -> None:
    _store, server, tokens = served
    with server.client(tokens[f"read@{OWN}"]) as client:
        ids = [p["id"] for p in client.get("/api/v1/pools").json()["items"]]
        assert ids == [OWN]
        assert client.get(f"/api/v1/pools/{OWN}").status_code == 200
        assert client.get(f"/api/v1/codes/{OWN_CODE}").json()["ok"] is True
        assert client.get(f"/api/v1/codes/{OTHER_CODE}").status_code == 404
    with server.client(tokens["read"]) as client:
        ids = [p["id"] for p in client.get("/api/v1/pools").json()["items"]]
        assert {OWN, OTHER} <= set(ids)
        assert client.get(f"/api/v1/codes/{OTHER_CODE}").json()["ok"] is True


def test_limited_tokens_hold_and_release_in_their_pools_only(
    served: tuple[Store, Server, dict[str, str]],
) -> None:
    """Holds need scope redeem, and a token limited to a pool holds nothing elsewhere."""
    _store, server, tokens = served
    own = {"code": OWN_CODE, "order": "mx-hold"}
    other = {"code": OTHER_CODE, "order": "mx-hold"}
    with server.client(tokens["read"]) as reader:
        for path in ("/api/v1/holds", "/api/v1/holds/release"):
            answer = reader.post(path, json=own)
            assert answer.status_code == 403 and "needs scope 'redeem'" in answer.text
    with server.client(tokens[f"redeem@{OWN}"]) as client:
        held = client.post("/api/v1/holds", json=own)
        assert held.status_code == 201, held.text
        assert held.json()["pool"] == OWN
        for path in ("/api/v1/holds", "/api/v1/holds/release"):
            elsewhere = [
                client.post(path, json=other),
                client.post(path, json={**other, "pool": OTHER}),
                client.post(path, json={"code": ABSENT_CODE, "order": "mx-hold"}),
            ]
            assert [a.status_code for a in elsewhere] == [404, 404, 404], path
            assert _same_answer(elsewhere[0], elsewhere[2]), path
        # The other pool's code was never held: any full token may hold it.
        with server.client(tokens["redeem"]) as full:
            assert full.get(f"/api/v1/codes/{OTHER_CODE}").json()["ok"] is True
        released = client.post("/api/v1/holds/release", json=own)
        assert released.status_code == 200, released.text
    with server.client(tokens["admin"]) as admin:
        # Nothing left behind: the own pool's code is free for every order again.
        assert admin.get(f"/api/v1/pools/{OWN}").json()["held"] == 0
        assert admin.get(f"/api/v1/codes/{OWN_CODE}").json()["ok"] is True


def test_a_new_or_revoked_token_takes_effect_at_once(
    served: tuple[Store, Server, dict[str, str]],
) -> None:
    store, server, _tokens = served
    secret = create_token(store.engine, "short-lived", Scope.READ).token
    with server.client(secret) as client:
        assert client.get("/api/v1/pools").status_code == 200
        revoke_token(store.engine, "short-lived")
        assert client.get("/api/v1/pools").status_code == 401


@pytest.fixture
def app_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(StoreConfig(f"sqlite:///{tmp_path / 'routes.db'}"))
    try:
        yield engine
    finally:
        engine.dispose()


def test_every_route_declares_its_scope(app_engine: Engine) -> None:
    app = create_app(ServiceConfig("sqlite://"), engine=app_engine)
    routes: list[ScopedRoute] = []
    for route in app.routes:
        assert isinstance(route, ScopedRoute), route
        assert isinstance(route.scope, Scope | Open), route.path
        routes.append(route)
    assert len(routes) >= 20
    document = app.openapi()
    declared = {(r.path, m.lower()): r.scope for r in routes for m in r.methods or ()}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["x-scope"] == declared[(path, method)].value
            if operation["x-scope"] in {s.value for s in Scope}:
                assert operation["security"] == [{"bearer": []}]
    # Only liveness and the API description are open to anyone.
    public = sorted(r.path for r in routes if r.scope is Open.PUBLIC)
    assert public == [
        "/api/docs",
        "/api/docs/{name}",
        "/api/v1/openapi.json",
        "/healthz",
        "/preview/login",
        "/preview/preview.js",
        "/preview/style.css",
    ]
    assert all(r.scope is not Open.PUBLIC for r in routes if r.path.startswith("/api/v1/pools"))


def test_a_route_without_a_scope_cannot_be_declared() -> None:
    router = ScopedRouter()

    def endpoint() -> None:
        return None

    with pytest.raises(TypeError):
        router.add_api_route("/x", endpoint)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        router.get("/x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        router.add_api_route("/x", endpoint, scope="admin")  # type: ignore[arg-type]
    assert router.routes == []


def _render(store: Store, folder: Path, pool: str, mailing: str, ids: list[str]) -> None:
    template = folder / f"{mailing}.j2"
    template.write_text(f"{{{{ client.promocode('{pool}') }}}}")
    recipients = folder / f"{mailing}.csv"
    recipients.write_text("id\n" + "".join(f"{i}\n" for i in ids))
    done = Cli(store.url)(
        "render", str(template), "--recipients", str(recipients), "--mailing", mailing,
        "--out", str(folder / f"{mailing}.jsonl"),
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr


def test_limited_history_shows_only_their_pools(
    served: tuple[Store, Server, dict[str, str]], tmp_path: Path
) -> None:
    store, server, tokens = served
    with server.client(tokens["admin"]) as admin:
        create_pool_over_api(admin, "seg-own", ["SO-1", "SO-2"])
        create_pool_over_api(admin, "seg-other", ["ST-1", "ST-2"])
    _render(store, tmp_path, "seg-own", "m-own", ["amy", "both"])
    _render(store, tmp_path, "seg-other", "m-other", ["both", "zed"])
    secret = create_token(store.engine, "seg-reader", Scope.READ, ["seg-own"]).token
    with server.client(secret) as client:
        assert client.get("/api/v1/segments").json()["items"] == ["amy", "both"]
        never = client.get("/api/v1/segments", params={"max_issued": 0}).json()["items"]
        assert "zed" not in never
        assert (
            client.get("/api/v1/segments", params={"issued_from": "seg-other"}).status_code == 404
        )
        issued = client.get("/api/v1/issuances").json()["items"]
        assert {i["pool"] for i in issued} == {"seg-own"}
        assert client.get("/api/v1/issuances", params={"pool": "seg-other"}).status_code == 404
        assert client.get("/api/v1/issuances", params={"mailing": "m-other"}).status_code == 404
        assert [m["id"] for m in client.get("/api/v1/mailings").json()["items"]] == ["m-own"]
        assert client.get("/api/v1/mailings/m-other").status_code == 404
        both = client.get("/api/v1/customers/both").json()
        assert [i["pool"] for i in both["items"]] == ["seg-own"]
        assert client.get("/api/v1/customers/zed").json()["items"] == []
    with server.client(tokens["read"]) as client:
        both = client.get("/api/v1/customers/both").json()
        assert sorted(i["pool"] for i in both["items"]) == ["seg-other", "seg-own"]


def test_an_events_token_opens_no_preview_and_holds_no_pools(
    served: tuple[Store, Server, dict[str, str]],
) -> None:
    store, server, tokens = served
    with server.client(follow_redirects=False) as client:
        answer = client.post(
            "/preview/login",
            content=f"token={tokens['events']}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 403, answer.text
        assert "only posts delivery events" in answer.text
        assert "set-cookie" not in answer.headers
        answer = client.post(
            "/preview/login",
            content=f"token={tokens['read']}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 303
    with pytest.raises(TokenError, match="cannot be limited to pools"):
        create_token(store.engine, "events-limited", Scope.EVENTS, [OWN])


def _faulty_checkouts() -> dict[str, tuple[dict[str, Any], int]]:
    """Checkout requests with a fault of their own, and the status that fault gets."""
    json_type = {"Content-Type": "application/json"}

    def oversized() -> Iterator[bytes]:
        # No Content-Length: cut off while it is read, inside the route.
        yield b'{"code": "'
        for _ in range(BODY_LIMIT // 8192 + 2):
            yield b"x" * 8192
        yield b'"}'

    redeem = {"method": "POST", "url": "/api/v1/redemptions"}
    return {
        "unknown query": ({**redeem, "params": {"nope": "1"}, "json": {"code": OWN_CODE}}, 422),
        "content type": ({**redeem, "content": b'{"code": "X"}'}, 415),
        "malformed json": ({**redeem, "content": b'{"code": ', "headers": json_type}, 400),
        "invalid body": ({**redeem, "json": {"order": "o"}}, 422),
        "oversized body": ({**redeem, "content": oversized(), "headers": json_type}, 413),
        "invalid query": (
            {"method": "GET", "url": f"/api/v1/codes/{OWN_CODE}", "params": {"pool": "a b"}},
            422,
        ),
    }


def test_the_token_is_judged_before_the_request(
    served: tuple[Store, Server, dict[str, str]],
) -> None:
    """401/403 before 422/415/400/413: a stranger learns nothing of how a request is formed."""
    _store, server, tokens = served
    strangers = [("none", 401), ("unknown", 401), ("revoked", 401), ("events", 403)]
    for fault, (_request, own_status) in _faulty_checkouts().items():
        for kind, status in [*strangers, ("redeem", own_status)]:
            # Made anew for each request: the oversized body is a generator, read once.
            request, _status = _faulty_checkouts()[fault]
            with server.client(tokens.get(kind)) as client:
                answer = client.request(**request)
            assert answer.status_code == status, (fault, kind, answer.text)


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store without a server: for an app served in this process."""
    yield from open_store(request.param, tmp_path)


def test_a_checkout_request_makes_one_trip_to_the_thread_pool(
    bare_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token check runs in the endpoint's own worker thread: one trip, not two."""
    app = create_app(ServiceConfig(bare_store.url), engine=bare_store.engine)
    secrets = {scope: token(bare_store, scope) for scope in ("admin", "redeem", "events")}
    trips: list[str] = []
    run_sync: Callable[..., Awaitable[Any]] = anyio.to_thread.run_sync

    async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(func, "__name__", type(func).__name__))
        return await run_sync(func, *args, **kwargs)

    async def ask() -> dict[str, tuple[int, int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8025"
        ) as client:

            async def trip(scope: str | None, request: dict[str, Any]) -> tuple[int, int]:
                """The answer's status, and the trips to the thread pool it took."""
                headers = dict(request.get("headers", {}))
                if scope:
                    headers["Authorization"] = f"Bearer {secrets[scope]}"
                trips.clear()
                answer = await client.request(**{**request, "headers": headers})
                return answer.status_code, len(trips)

            pool = {"name": "hop", "id": "hop", "description": "hops", "activate": True}
            create = {"method": "POST", "url": "/api/v1/pools", "json": pool}
            upload = {
                "method": "POST",
                "url": "/api/v1/pools/hop/codes",
                "content": b"HOP-1\n",
                "headers": {"Content-Type": "text/plain"},
            }
            made = [await trip("admin", request) for request in (create, upload)]
            assert [status for status, _trips in made] == [201, 200]
            monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
            redeem = {"method": "POST", "url": "/api/v1/redemptions"}
            bad_body = {**redeem, "json": {"order": "o"}}
            return {
                "healthz": await trip(None, {"method": "GET", "url": "/healthz"}),
                "check": await trip("redeem", {"method": "GET", "url": "/api/v1/codes/HOP-1"}),
                "redemption": await trip("redeem", {**redeem, "json": {"code": "HOP-1"}}),
                "refused": await trip("redeem", {**redeem, "json": {"code": "HOP-1"}}),
                "no token, bad body": await trip(None, bad_body),
                "wrong scope, bad body": await trip("events", bad_body),
                "bad body": await trip("redeem", bad_body),
            }

    assert anyio.run(ask) == {
        "healthz": (200, 1),
        "check": (200, 1),
        "redemption": (201, 1),
        "refused": (409, 1),
        "no token, bad body": (401, 1),
        "wrong scope, bad body": (403, 1),
        "bad body": (422, 1),
    }


def test_a_dependency_runs_after_the_token_check() -> None:
    """A route's dependencies run before its endpoint: the check must run before them."""
    ran: list[str] = []

    def dependency() -> None:
        ran.append("dependency")

    router = ScopedRouter()

    @router.get("/guarded", scope=Scope.READ, dependencies=[Depends(dependency)])
    def guarded() -> dict[str, str]:
        ran.append("endpoint")
        return {}

    app = FastAPI()
    app.router.routes.extend(router.routes)
    problems.install(app)

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/guarded")

    assert anyio.run(ask).status_code == 401
    assert ran == []
