"""The API document says what the server accepts: schemathesis ``--checks all``
against a real ``promomail serve``, and one test for each kind of mismatch it
once found (empty ids and names, an empty cursor, ``PATCH {}``, a negative
count, an ``Allow`` naming one method of several).

The server runs with ``PROMOMAIL_WEBHOOK_ALLOW_PRIVATE=1``: which addresses a
pool's ``notify_url`` may reach is the operator's setting, not the document's,
so generated URLs are judged by their form alone.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from promomail.pools import (
    Applied,
    GenerationReport,
    HoldResult,
    PoolCounts,
    PoolSettings,
    PoolView,
    RedemptionResult,
    ReleaseResult,
    RollbackResult,
    VoidReport,
)
from promomail.pools.identifiers import is_blank
from promomail.service.schemas import (
    EventsAppliedDoc,
    GenerationDoc,
    HoldDoc,
    PoolCreate,
    PoolDoc,
    RedemptionDoc,
    ReleaseDoc,
    RollbackDoc,
    VoidDoc,
)
from tests.support.paths import REPO_ROOT
from tests.support.service_helpers import (
    Server,
    create_pool_over_api,
    open_store,
    problem,
    start_server,
    stop_cleanly,
    token,
)

ST = str(Path(sys.executable).with_name("st"))
CONFIG = Path(__file__).with_name("schemathesis.toml")
#: Cases per operation and phase: enough to meet every constraint of the
#: document, few enough for about a minute per store on two cores.
EXAMPLES = 10
RUN_SECONDS = 240


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    folder = tmp_path_factory.mktemp(f"api-schema-{request.param}")
    for store in open_store(request.param, folder):
        server = start_server(store.url, env={"PROMOMAIL_WEBHOOK_ALLOW_PRIVATE": "1"})
        try:
            yield server, token(store, "admin")
        finally:
            stop_cleanly(server)


def _document(server: Server) -> dict[str, Any]:
    with server.client() as client:
        found: dict[str, Any] = client.get("/api/v1/openapi.json").json()
    return found


@pytest.mark.slow
def test_schemathesis_finds_nothing(served: tuple[Server, str]) -> None:
    server, secret = served
    with server.client(secret) as admin:
        create_pool_over_api(admin, "st", ["ST-1", "ST-2", "ST-3"])
    command = [
        *(ST, "--config-file", str(CONFIG), "run", f"{server.url}/api/v1/openapi.json"),
        *("--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"),
        *("--header", f"Authorization: Bearer {secret}"),
        *("--max-examples", str(EXAMPLES), "--workers", "1"),
        *("--request-timeout", "60", "--generation-database", "none", "--no-color"),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_SECONDS, check=False, cwd=server_dir()
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-20_000:]
    # Every phase ran, and the stateful one followed the document's links.
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output[-5000:]
    assert "API Links:" in output, output[-5000:]


def server_dir() -> Path:
    """Where schemathesis may write (its report folder), out of the source tree."""
    folder = REPO_ROOT / ".pytest_cache" / "schemathesis"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_document_states_the_constraints(served: tuple[Server, str]) -> None:
    document = _document(served[0])
    schemas = document["components"]["schemas"]
    create = schemas["PoolCreate"]["properties"]
    assert create["name"]["minLength"] == 1 and "pattern" in create["name"]
    assert create["id"]["anyOf"][0]["pattern"] == "^[a-z0-9][a-z0-9._-]{0,99}$"
    assert schemas["PoolEdit"]["minProperties"] == 1
    assert schemas["GenerateRequest"]["properties"]["count"]["minimum"] == 1
    assert schemas["HoldRequest"]["properties"]["seconds"]["minimum"] == 30

    def parameter(path: str, method: str, name: str) -> dict[str, Any]:
        [found] = [p for p in document["paths"][path][method]["parameters"] if p["name"] == name]
        schema: dict[str, Any] = found["schema"]
        return schema.get("anyOf", [schema])[0]  # type: ignore[no-any-return]

    assert parameter("/api/v1/pools/{pool_id}", "get", "pool_id")["minLength"] == 1
    assert parameter("/api/v1/segments", "get", "max_issued")["minimum"] == 0
    assert parameter("/api/v1/issuances", "get", "after")["minLength"] == 1
    assert parameter("/api/v1/mailings/{mailing_id}", "get", "mailing_id")["minLength"] == 1
    links = document["paths"]["/api/v1/pools"]["post"]["responses"]["201"]["links"]
    assert links["ShowPool"]["parameters"] == {"pool_id": "$response.body#/id"}


@pytest.mark.parametrize(
    "body",
    [{"name": ""}, {"name": "   "}, {"name": "Sale", "id": ""}, {"name": "Sale", "id": "Upper"}],
)
def test_empty_names_and_ids_are_refused_by_the_schema(
    served: tuple[Server, str], body: dict[str, Any]
) -> None:
    server, secret = served
    with server.client(secret) as admin:
        document = problem(admin.post("/api/v1/pools", json=body), 422)
    # Refused by the request's validation, which names the field.
    assert document["errors"][0]["loc"][-1] in ("name", "id"), document


def test_an_empty_id_in_a_path_or_query_is_refused(served: tuple[Server, str]) -> None:
    server, secret = served
    with server.client(secret) as admin:
        for path in ("/api/v1/codes/x?pool=", "/api/v1/issuances?pool=", "/api/v1/pools/-x"):
            problem(admin.get(path), 422)


def test_an_empty_cursor_is_outside_the_schema(served: tuple[Server, str]) -> None:
    server, secret = served
    with server.client(secret) as admin:
        for path in ("/api/v1/issuances", "/api/v1/segments", "/api/v1/customers/c1"):
            document = problem(admin.get(path, params={"after": ""}), 422)
            assert document["errors"][0]["loc"] == ["query", "after"], document
            # Left out, the first page.
            assert admin.get(path).status_code == 200


def test_patch_needs_a_setting(served: tuple[Server, str]) -> None:
    server, secret = served
    with server.client(secret) as admin:
        create_pool_over_api(admin, "patchme")
        problem(admin.patch("/api/v1/pools/patchme", json={}), 422)
        document = problem(admin.patch("/api/v1/pools/patchme", json={"name": None}), 422)
        assert "null" in document["detail"]
        changed = admin.patch("/api/v1/pools/patchme", json={"low_stock": 3})
        assert changed.status_code == 200 and changed.json()["low_stock"] == 3


@pytest.mark.parametrize("name", ["min_issued", "max_issued"])
def test_negative_counts_are_refused_by_the_schema(served: tuple[Server, str], name: str) -> None:
    server, secret = served
    with server.client(secret) as admin:
        document = problem(admin.get("/api/v1/segments", params={name: "-1"}), 422)
        assert document["errors"][0]["loc"] == ["query", name]
        assert admin.get("/api/v1/segments", params={name: "0"}).status_code == 200


def test_bodies_take_no_guessed_types(served: tuple[Server, str]) -> None:
    server, secret = served
    with server.client(secret) as admin:
        for body in ({"name": "T", "id": "typed", "activate": 0}, {"name": "T", "low_stock": "5"}):
            problem(admin.post("/api/v1/pools", json=body), 422)
        # 5.0 is an integer to JSON Schema.
        created = admin.post("/api/v1/pools", json={"name": "T", "id": "whole", "low_stock": 5.0})
        assert created.status_code == 201 and created.json()["low_stock"] == 5


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("OPTIONS", "/api/v1/pools/some-pool"),
        ("PUT", "/api/v1/pools/some-pool"),
        ("DELETE", "/api/v1/pools"),
        ("GET", "/api/v1/redemptions"),
    ],
)
def test_405_allows_every_method_of_the_path(
    served: tuple[Server, str], method: str, path: str
) -> None:
    server, secret = served
    paths = _document(server)["paths"]
    template = path.replace("some-pool", "{pool_id}")
    documented = {name.upper() for name in paths[template]}
    with server.client(secret) as admin:
        response = admin.request(method, path)
    problem(response, 405)
    allowed = {part.strip() for part in response.headers["allow"].split(",")}
    assert allowed - {"HEAD"} == documented
    assert method not in allowed


# --- the library's rules and the document's patterns are one rule -----------------

SPACES = [chr(c) for c in range(0x3100) if chr(c).isspace()] + ["\ufeff", "\u200b", "x"]


@pytest.mark.parametrize("char", SPACES, ids=lambda c: f"U+{ord(c):04X}")
def test_blank_names_are_what_the_pattern_refuses(char: str) -> None:
    """Pydantic checks the pattern with its own regular expressions; the
    library with ``str.strip``: they must agree on every space."""
    for name in (char, f"{char}{char}"):
        try:
            PoolCreate(name=name, id="p")
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted is not is_blank(name), repr(name)


def test_answer_documents_are_the_library_documents() -> None:
    """The described answers name the fields the library's results show, no fewer."""
    moment = datetime(2026, 1, 2, 3, 4, 5)
    answers: list[tuple[type[BaseModel], dict[str, Any]]] = [
        (RedemptionDoc, RedemptionResult(True, "A", pool="p", mailing="m").as_dict()),
        (RedemptionDoc, RedemptionResult(False, "A", reason="no").as_dict()),
        (RollbackDoc, RollbackResult("A", "p", "o", None, None, None, moment, moment, 0).as_dict()),
        (HoldDoc, HoldResult(True, "A", "p", "o", expires_at=moment).as_dict()),
        (ReleaseDoc, ReleaseResult(True, "A", "p", "o", released_at=moment).as_dict()),
        (GenerationDoc, asdict(GenerationReport(1, 2, 3, 4))),
        (EventsAppliedDoc, Applied(1, 2, 3).as_dict()),
        (PoolDoc, PoolView("p", "active", PoolSettings("P"), moment, PoolCounts()).as_dict()),
        (VoidDoc, VoidReport("p", 1, 2, 3).as_dict()),
    ]
    for model, answer in answers:
        assert set(answer) <= set(model.model_fields), model.__name__
        model.model_validate(answer)
    assert {"mailing", "replayed"} <= set(RedemptionDoc.model_fields)
