"""The preview page in a real Chromium: what a template author sees and does.

Chromium is the system's (/usr/bin/chromium); a browser is never downloaded.
Without it these tests skip, except in CI (CI=true), where they fail.
Screenshots are kept in each test's tmp folder.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promomail.pools import StoreConfig, open_engine
from tests.support.browser_helpers import chromium
from tests.support.cli_helpers import Cli
from tests.support.service_helpers import (
    Server,
    Store,
    open_store,
    start_server,
    stop_cleanly,
    token,
)
from tests.support.store_helpers import make_pool, snapshot

WAIT_MS = 15_000

WELCOME = """{% block subject %}Welcome, {{ client.first_name | default('friend') }}{% endblock %}
{% block text %}Version one. Your code: {{ client.promocode('pv') }}{% endblock %}
{% block html %}<p id="static">Hello {{ client.first_name | default('friend') }}</p>
<p>{{ client.promocode('pv') }}</p>
<script>console.log('ran'); document.body.innerHTML = 'SCRIPT RAN';</script>
<img src="data:," onerror="document.body.innerHTML = 'HANDLER RAN'">
{% endblock %}
"""
AGAIN = "Your last code was {{ client.last_promocode('pv') }}, {{ client.first_name }}.\n"


@pytest.fixture(scope="module")
def playwright_browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture(params=["sqlite", "postgresql"])
def preview_site(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Store, Server, Path]]:
    templates = tmp_path / "templates"
    (templates / "nested").mkdir(parents=True)
    (templates / "welcome.j2").write_text(WELCOME)
    (templates / "nested" / "again.jinja").write_text(AGAIN)
    (templates / "notes.txt").write_text("not a template")
    recipients = tmp_path / "recipients.csv"
    recipients.write_text("id,first_name\nr1,Ada\nr2,Grace\n")
    for store in open_store(request.param, tmp_path):
        make_pool(store.engine, "pv", [f"PV-{i}" for i in range(5)])
        # r1 was given a code before: last_promocode shows it.
        mailing = tmp_path / "first.jsonl"
        first = tmp_path / "first.j2"
        first.write_text("{{ client.promocode('pv') }}")
        done = Cli(store.url)(
            "render", str(first), "--recipients", str(recipients), "--mailing", "earlier",
            "--out", str(mailing),
        )  # fmt: skip
        assert done.exit_code == 0, done.stderr
        server = start_server(
            store.url, "--templates", str(templates), "--recipients", str(recipients)
        )
        try:
            yield store, server, templates
        finally:
            stop_cleanly(server)


def _issued_to(store: Store, customer: str) -> str:
    history = Cli(store.url).json("customer", customer)
    [issuance] = history["issuances"]
    code: str = issuance["code"]
    return code


def test_author_previews_edits_and_sees_errors(
    playwright_browser: Any, preview_site: tuple[Store, Server, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    store, server, templates = preview_site
    before = snapshot(store.engine)
    page = playwright_browser.new_page()
    ran: list[str] = []
    page.on("console", lambda message: ran.append(message.text))
    page.goto(server.url + "/")

    # The templates of the folder and its subfolders, and the recipients of the file.
    options = page.locator("#template option").all_inner_texts()
    assert options == ["nested/again.jinja", "welcome.j2"]
    # Each choice submits the form; the next one waits for the new page to have
    # loaded, so its script is listening before the test picks again.
    with page.expect_navigation():
        page.select_option("#template", "welcome.j2")
    expect(page.locator("#shown-template")).to_have_text("welcome.j2", timeout=WAIT_MS)
    assert page.locator("#recipient option").all_inner_texts() == ["r1", "r2"]
    with page.expect_navigation():
        page.select_option("#recipient", "r2")
    expect(page.locator("#subject")).to_have_text("Welcome, Grace", timeout=WAIT_MS)
    expect(page.locator("#part-text")).to_have_text("Version one. Your code: [[promocode from pv]]")
    expect(page.locator("#parts")).to_have_text("subject, text, html")
    pools = page.locator("#pools tbody tr").first.inner_text()
    assert re.split(r"\s+", pools.strip()) == ["pv", "pv", "issue", "2", "active", "3"]

    # The html part as a mail client shows it: static content, and no script ran.
    frame = page.frame_locator("#html-part")
    expect(frame.locator("#static")).to_have_text("Hello Grace", timeout=WAIT_MS)
    body = frame.locator("body").inner_text()
    assert "SCRIPT RAN" not in body and "HANDLER RAN" not in body
    assert "[[promocode from pv]]" in body
    sandbox = page.locator("#html-part").get_attribute("sandbox")
    assert sandbox == ""
    page.screenshot(path=str(tmp_path / "preview.png"), full_page=True)

    # The file changes on disk: the page follows by itself.
    (templates / "welcome.j2").write_text(WELCOME.replace("Version one", "Version two"))
    expect(page.locator("#part-text")).to_have_text(
        "Version two. Your code: [[promocode from pv]]", timeout=WAIT_MS
    )
    expect(page.locator("#subject")).to_have_text("Welcome, Grace")

    # A syntax error is shown with its line, as `check` prints it.
    broken = WELCOME.replace("{% block html %}", "{% block html %}{% if %}")
    (templates / "welcome.j2").write_text(broken)
    expect(page.locator("#problems")).to_contain_text(
        re.compile(r"welcome\.j2, line 3: syntax error"), timeout=WAIT_MS
    )
    page.screenshot(path=str(tmp_path / "syntax-error.png"), full_page=True)

    # Typed-in recipient fields, and a template showing a real last code.
    page.goto(server.url + "/?template=nested/again.jinja&recipient=r1")
    expect(page.locator("#part-body")).to_have_text(
        f"Your last code was {_issued_to(store, 'r1')}, Ada.", timeout=WAIT_MS
    )
    page.fill("#fields", "id=someone-new\nfirst_name=Linus")
    page.click("button[type=submit]")
    expect(page.locator("#part-body")).to_have_text("Your last code was , Linus.", timeout=WAIT_MS)
    page.close()
    assert "ran" not in ran
    assert snapshot(store.engine) == before, "the preview page never writes"


def test_public_address_asks_for_a_token(playwright_browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "sms.j2").write_text("Hi {{ client.id }}\n")
    for store in open_store("sqlite", tmp_path):
        server = start_server(store.url, "--host", "0.0.0.0", "--templates", str(templates))
        url = re.sub(r"//[^:/]+", "//127.0.0.1", server.url)
        try:
            context = playwright_browser.new_context()
            page = context.new_page()
            page.goto(url + "/")
            expect(page.locator("input#token")).to_be_visible(timeout=WAIT_MS)
            page.fill("#token", "pm_not-a-token")
            page.click("button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("unknown or revoked")
            reader = token(store, "read", name="reader")
            make_pool(store.engine, "only", [])
            page.fill("#token", token(store, "read", ["only"], name="one-pool"))
            page.click("button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("limited to some pools")
            page.fill("#token", reader)
            page.click("button[type=submit]")
            expect(page.locator("#part-body")).to_have_text("Hi preview", timeout=WAIT_MS)
            [cookie] = context.cookies()
            assert cookie["httpOnly"] is True
            assert cookie["sameSite"] == "Strict"
            assert cookie["value"] == reader
            context.close()
        finally:
            stop_cleanly(server)


def test_a_store_failure_is_the_servers_error_not_the_pages_text(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "t.j2").write_text("{{ client.promocode('spring') }}")
    database = tmp_path / "store.db"
    url = f"sqlite:///{database}"
    open_engine(StoreConfig(url)).dispose()  # migrated
    server = start_server(url, "--templates", str(templates))
    try:
        with sqlite3.connect(database) as conn:
            conn.execute("ALTER TABLE pools RENAME TO pools_gone")
        with server.client() as client:
            answer = client.get("/preview/result", params={"template": "t.j2", "fields": "id=ann"})
    finally:
        stop_cleanly(server)
    assert answer.status_code == 500
    assert "pools" not in answer.text and str(tmp_path) not in answer.text
    assert "no such table: pools" in server.stderr
