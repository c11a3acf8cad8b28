"""``/api/docs`` in a real Chromium with no way out of the machine.

A real ``promomail serve`` answers; every request the browser makes to
anything but 127.0.0.1 is aborted (and recorded), as on a machine without
internet. The page must still show every operation of the API document, and
must not even try to reach anything else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.browser_helpers import chromium
from tests.support.service_helpers import Server, Store, served_store

WAIT_MS = 15_000
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Server]]:
    yield from served_store(request.param, tmp_path)


def test_the_docs_page_shows_every_operation_offline(
    browser: Any, served: tuple[Store, Server], tmp_path: Path
) -> None:
    from playwright.sync_api import Route, expect

    _, server = served
    document = httpx.get(server.url + "/api/v1/openapi.json").json()
    operations = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    ]
    assert len(operations) >= 20

    context = browser.new_context()
    outside: list[str] = []
    asked: list[str] = []

    def only_loopback(route: Route) -> None:
        url = route.request.url
        asked.append(url)
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith("data:"):
            route.continue_()
        else:
            outside.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    page.goto(server.url + "/api/docs")

    summaries = page.locator(".opblock-summary")
    expect(summaries.first).to_be_visible(timeout=WAIT_MS)
    expect(summaries).to_have_count(len(operations), timeout=WAIT_MS)
    redeem = page.locator(".opblock-summary", has_text="/api/v1/redemptions").first
    expect(redeem).to_be_visible()
    shown = {
        (
            summary.locator(".opblock-summary-method").inner_text().strip(),
            summary.locator(".opblock-summary-path").get_attribute("data-path"),
        )
        for summary in summaries.all()
    }
    assert shown == set(operations)
    # An operation opens with its description, and runs against this server.
    page.locator(".opblock-summary", has_text="/healthz").first.click()
    operation = page.locator(".opblock.is-open")
    expect(operation).to_contain_text("whether the store answers", timeout=WAIT_MS)
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    answer = operation.locator(".live-responses-table .response .response-col_status").first
    expect(answer).to_have_text("200", timeout=WAIT_MS)
    expect(operation.locator(".live-responses-table")).to_contain_text('"reachable"')
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
    context.close()

    assert outside == [], "the page tried to reach beyond this machine"
    assert problems == []
    assert any(url.endswith("/api/docs/swagger-ui-bundle.js") for url in asked)


def test_the_docs_files_come_from_this_server_and_nothing_else_may_load(
    served: tuple[Store, Server],
) -> None:
    _, server = served
    with server.client() as client:
        page = client.get("/api/docs")
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "default-src 'none'" in policy
        assert "http" not in page.text  # no address of anywhere else
        for name, kind in (
            ("swagger-ui-bundle.js", "text/javascript"),
            ("swagger-ui.css", "text/css"),
            ("start.js", "text/javascript"),
            ("favicon.png", "image/png"),
        ):
            asset = client.get(f"/api/docs/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-type"].startswith(kind)
            assert asset.headers["x-content-type-options"] == "nosniff"
        # Only the files named: nothing else of the package or the server's disk.
        for name in ("swagger-ui.js", "..%2Fstatic%2Fpreview.js", "%2E%2E", "index.html"):
            assert client.get(f"/api/docs/{name}").status_code == 404, name
