"""Bad request bodies: each answers a problem document naming the fault, and stores nothing."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from promomail.pools.store.models import CODE_MAX_LENGTH
from promomail.service.bodies import BODY_LIMIT, UPLOAD_LIMIT
from tests.support.service_helpers import (
    Server,
    Store,
    create_pool_over_api,
    problem,
    served_store,
    token,
)
from tests.support.store_helpers import snapshot


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, Server]]:
    folder = tmp_path_factory.mktemp(f"bodies-{request.param}")
    for store, server in served_store(request.param, folder):
        with server.client(token(store, "admin")) as admin:
            create_pool_over_api(admin, "bodies", ["B-1"])
        yield store, server


def _refused(store: Store, send: Any, status: int) -> dict[str, Any]:
    """Send a request that must be refused with ``status`` and change nothing."""
    before = snapshot(store.engine)
    document = problem(send(), status)
    assert snapshot(store.engine) == before
    return document


def _upload(client: httpx.Client, body: Any, kind: str | None = "text/plain") -> httpx.Response:
    headers = {"Content-Type": kind} if kind else {}
    return client.post("/api/v1/pools/bodies/codes", content=body, headers=headers)


def test_malformed_json(served: tuple[Store, Server], admin: httpx.Client) -> None:
    store = served[0]
    json_type = {"Content-Type": "application/json"}
    for path in ("/api/v1/pools", "/api/v1/redemptions", "/api/v1/pools/bodies/codes/generate"):
        document = _refused(
            store, lambda p=path: admin.post(p, content=b'{"name": ', headers=json_type), 400
        )
        assert "not valid JSON" in document["detail"]
    not_utf8 = _refused(
        store,
        lambda: admin.post("/api/v1/pools", content=b'{"name": "\xff"}', headers=json_type),
        400,
    )
    assert "UTF-8" in not_utf8["detail"]
    nul = _refused(store, lambda: admin.post("/api/v1/pools", json={"name": "a\x00b"}), 422)
    assert nul["detail"] == "name: must not contain a NUL character"
    wrong_type = _refused(store, lambda: admin.post("/api/v1/pools", json={"name": 5}), 422)
    assert wrong_type["detail"].startswith("name:")
    listed = _refused(store, lambda: admin.post("/api/v1/pools", json=["name"]), 422)
    assert listed["errors"]


def test_wrong_content_types(served: tuple[Store, Server], admin: httpx.Client) -> None:
    store = served[0]
    as_text = _refused(
        store,
        lambda: admin.post(
            "/api/v1/pools", content=b'{"name": "x"}', headers={"Content-Type": "text/plain"}
        ),
        415,
    )
    assert "must be application/json, not Content-Type text/plain" in as_text["detail"]
    missing = _refused(store, lambda: admin.post("/api/v1/pools", content=b'{"name": "x"}'), 415)
    assert "Content-Type none" in missing["detail"]
    upload_json = _refused(store, lambda: _upload(admin, b"B-2\n", "application/json"), 415)
    assert "text/plain or text/csv" in upload_json["detail"]
    _refused(store, lambda: _upload(admin, b"B-2\n", None), 415)
    form = _refused(store, lambda: _upload(admin, b"B-2\n", "multipart/form-data"), 415)
    assert "multipart/form-data" in form["detail"]


def test_bad_upload_content(served: tuple[Store, Server], admin: httpx.Client) -> None:
    store = served[0]
    bad_utf8 = _refused(store, lambda: _upload(admin, b"B-2\nB\xff3\nB-4\n"), 422)
    assert bad_utf8["rejected"] == [{"line": 2, "reason": "invalid UTF-8 at byte 2"}]
    assert bad_utf8["stored"] is False
    lines = b"".join(b"N-%03d\n" % i for i in range(100))
    nul = _refused(store, lambda: _upload(admin, b"N-X\n" + b"N\x00Y\n" + lines), 422)
    assert nul["rejected"] == [{"line": 2, "reason": "control character in code"}]
    binary = _refused(store, lambda: _upload(admin, bytes(range(32)) * 20), 422)
    assert "binary file" in binary["detail"]
    empty = _refused(store, lambda: _upload(admin, b""), 422)
    assert "empty" in empty["detail"]
    no_column = _refused(store, lambda: _upload(admin, b"coupon_value\n5\n", "text/csv"), 422)
    assert "column" in no_column["detail"]


def _chunks(total: int, line: bytes = b"BIG-%09d\n") -> Iterator[bytes]:
    """About ``total`` bytes of valid, distinct codes, sent without a Content-Length."""
    sent = 0
    number = 0
    while sent <= total:
        block = b"".join(line % (number + k) for k in range(20_000))
        number += 20_000
        sent += len(block)
        yield block


def _raw_post(server: Server, path: str, authorization: str, length: int) -> tuple[int, str, Any]:
    """POST headers only, declaring ``length`` bytes, and read the answer."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=60) as conn:
        conn.sendall(
            (
                f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
                f"Authorization: {authorization}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {length}\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += conn.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(body) < int(headers["content-length"]):
            body += conn.recv(65536)
    return int(lines[0].split()[1]), headers["content-type"], json.loads(body)


def test_oversized_bodies(served: tuple[Store, Server], admin: httpx.Client) -> None:
    store = served[0]
    declared = _refused(
        store, lambda: admin.post("/api/v1/pools", json={"name": "x" * BODY_LIMIT}), 413
    )
    assert declared["detail"] == "the request body is larger than 1 MiB"

    def unsized_json() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(BODY_LIMIT // 8192 + 2):
            yield b"x" * 8192
        yield b'"}'

    streamed = _refused(
        store,
        lambda: admin.post(
            "/api/v1/pools", content=unsized_json(), headers={"Content-Type": "application/json"}
        ),
        413,
    )
    assert streamed["detail"] == "the request body is larger than 1 MiB"
    # A declared length over the limit is answered before any of the body is sent.
    before = snapshot(store.engine)
    status, kind, document = _raw_post(
        served[1], "/api/v1/pools/bodies/codes", admin.headers["authorization"], UPLOAD_LIMIT + 1
    )
    assert (status, kind) == (413, "application/problem+json")
    assert document["detail"] == "the request body is larger than 32 MiB"
    assert snapshot(store.engine) == before


@pytest.mark.slow
def test_an_oversized_upload_stream_is_cut_off(
    served: tuple[Store, Server], admin: httpx.Client
) -> None:
    store = served[0]
    # A streamed upload of valid codes is cut off once it passes 32 MiB: the
    # import already running is rolled back, so not one of its codes stays.
    # Codes of the longest length a code may have: the fewest to import (and
    # roll back) before the cut.
    longest = b"BIG-%09d-" + b"X" * (CODE_MAX_LENGTH - 14) + b"\n"
    too_big = _refused(store, lambda: _upload(admin, _chunks(UPLOAD_LIMIT, longest)), 413)
    assert too_big["detail"] == "the request body is larger than 32 MiB"
    # A large body under the limit streams in and is imported.
    size = 4 * 1024 * 1024
    fitting = _upload(admin, b"".join(_chunks(size - 400_000)))
    assert fitting.status_code == 200, fitting.text
    assert fitting.json()["accepted"] > 100_000
