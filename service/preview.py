"""The preview page for template authors: ``preview`` and ``check`` in a browser.

Server-rendered (Jinja2, autoescaped) with one small script that watches
the template file and swaps in the new result when it changes. The message
itself is shown as an email client shows it: the html part in an iframe
with ``sandbox`` (scripts never run in it) and ``srcdoc``, under a
Content-Security-Policy that allows no inline or foreign script at all.

The page calls exactly what the ``preview`` and ``check`` commands call, so
it shows the same placeholders, the same real last codes and the same
report, and like them it never writes to the store.

The template itself is checked and rendered in the server's template
processes (:class:`templating.TemplateProcesses`), never in the threads that
answer the API: there the render's timer works, a template that outruns it
is killed, and however many pages are open, the checkout keeps its threads.
The routes are ``async`` for the same reason: waiting for a template holds
no thread.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import anyio
from anyio import to_thread
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import Engine

from promomail.pools import DatabaseFailure, PromomailError, authenticate
from promomail.service.auth import PREVIEW_COOKIE, LoginRequired, Open, ScopedRouter, engine_of
from promomail.service.schemas import NO_NUL
from promomail.templating import (
    CheckReport,
    Preview,
    Recipient,
    TemplateProcesses,
    check_template,
    preview,
    preview_recipients,
    read_recipients,
)

TEMPLATE_SUFFIXES = (".j2", ".jinja")
#: Recipients offered in the picker; any other id can still be typed in.
MAX_LISTED_RECIPIENTS = 500
#: What the page's own answers allow: its script and styles, nothing inline but styles.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https:; connect-src 'self'; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = Path(__file__).with_name("static")
#: Seconds a page waits for a free template process before it says the server is busy.
WAIT_SECONDS = 10.0
BUSY = "the server is busy with other previews; try again in a moment"

router = ScopedRouter(tags=["preview"])
_pages = Environment(
    loader=PackageLoader("promomail.service", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

TemplateParam = Annotated[str | None, Query(pattern=NO_NUL, max_length=1000)]
TextParam = Annotated[str | None, Query(pattern=NO_NUL, max_length=10_000)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def list_templates(folder: Path | None) -> list[str]:
    """The templates under ``folder`` and its subfolders, as paths relative to it.

    A file reached through a symbolic link that leads out of ``folder`` is
    not one of them (nor is it read: see :func:`_show`).
    """
    if folder is None or not folder.is_dir():
        return []
    root = folder.resolve()
    found = (
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix in TEMPLATE_SUFFIXES and p.is_file() and p.resolve().is_relative_to(root)
    )
    return sorted(found)


def _listed_recipients(path: Path | None) -> tuple[list[str], str | None]:
    if path is None:
        return [], None
    ids: list[str] = []
    try:
        for recipient in read_recipients(path):
            ids.append(recipient.id)
            if len(ids) >= MAX_LISTED_RECIPIENTS:
                break
    except PromomailError as exc:
        return ids, str(exc)
    return ids, None


def parse_fields(text: str) -> dict[str, str]:
    """Typed-in recipient fields: one ``key=value`` per line, as ``--recipient`` takes them."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            fields[key.strip()] = value.strip()
    return fields


@dataclass
class Shown:
    """Everything the result part of the page shows."""

    template: str | None
    report: CheckReport | None = None
    problem_lines: list[str] = field(default_factory=list)
    preview: Preview | None = None
    error: str | None = None


@dataclass
class Choice:
    template: str | None
    recipient: str | None
    fields: str

    def query(self) -> str:
        pairs = {
            key: value
            for key, value in (
                ("template", self.template),
                ("recipient", self.recipient),
                ("fields", self.fields),
            )
            if value
        }
        return urlencode(pairs)


def _settings(request: Request) -> tuple[Path | None, Path | None]:
    state = request.app.state
    return state.templates, state.recipients


def _resolve(request: Request, template: str | None) -> tuple[list[str], str | None, Path | None]:
    """The listed templates, the chosen one (a listed one only) and its file."""
    folder, _ = _settings(request)
    listed = list_templates(folder)
    chosen = template if template in listed else (listed[0] if listed else None)
    path = folder / chosen if folder is not None and chosen is not None else None
    return listed, chosen, path


def _recipients_for(recipients_file: Path | None, choice: Choice) -> Iterable[Recipient]:
    typed = parse_fields(choice.fields)
    if typed or recipients_file is None:
        return list(preview_recipients(None, typed, 1))
    if choice.recipient:
        wanted = choice.recipient
        return read_recipients(recipients_file, keep=lambda rid: rid == wanted)
    return preview_recipients(str(recipients_file), None, 1)


def look(
    engine: Engine,
    choice: Choice,
    path: Path,
    folder: Path | None,
    recipients_file: Path | None,
) -> Shown:
    """The check report and the preview of one template: run in a template process.

    ``path`` is read only if it still lies inside ``folder`` when it is opened:
    a link swapped in after the listing is refused there too.
    """
    shown = Shown(choice.template)
    try:
        report = check_template(
            engine, str(path), str(recipients_file) if recipients_file else None, within=folder
        )
    except DatabaseFailure:
        raise  # the server's error handler logs it and answers 503 or 500
    except PromomailError as exc:
        shown.error = str(exc)
        return shown
    shown.report = report
    shown.problem_lines = report.problem_lines()
    if not report.compiled:
        return shown  # a syntax error: nothing to render
    try:
        previews = preview(
            engine, str(path), _recipients_for(recipients_file, choice), within=folder
        )
    except DatabaseFailure:
        raise  # the server's error handler logs it and answers 503 or 500
    except PromomailError as exc:  # e.g. a recipients file that cannot be read
        shown.error = str(exc)
        return shown
    if not previews:
        shown.error = f"no recipient {choice.recipient!r} in the recipients file"
        return shown
    shown.preview = previews[0]
    return shown


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


class _Capacity:
    """The template processes of one app, and who may use them now."""

    def __init__(self, processes: TemplateProcesses) -> None:
        self.processes = processes
        # Requests beyond the processes wait here, holding no thread.
        self.slots = anyio.CapacityLimiter(processes.size)
        # The threads that wait for the processes: never the API's.
        self.threads = anyio.CapacityLimiter(processes.size)


def _capacity(request: Request) -> _Capacity:
    state = request.app.state
    capacity: _Capacity | None = getattr(state, "template_capacity", None)
    if capacity is None:
        # Made in the app's event loop, where its limiters belong.
        capacity = state.template_capacity = _Capacity(state.template_processes)
    return capacity


async def _show(request: Request, choice: Choice, path: Path | None) -> Shown:
    if path is None:
        return Shown(choice.template, error="no templates (*.j2, *.jinja) under --templates")
    capacity = _capacity(request)
    folder, recipients_file = _settings(request)
    try:
        with anyio.fail_after(WAIT_SECONDS):
            await capacity.slots.acquire()
    except TimeoutError:
        return Shown(choice.template, error=BUSY)
    try:
        return await to_thread.run_sync(
            capacity.processes.run,
            look,
            choice,
            path,
            folder,
            recipients_file,
            limiter=capacity.threads,
        )
    except DatabaseFailure:
        raise  # the server's error handler logs it and answers 503 or 500
    except PromomailError as exc:  # stopped: it ran too long, or its process died
        return Shown(choice.template, error=str(exc))
    finally:
        capacity.slots.release()


def _files(request: Request, choice: Choice) -> tuple[list[str], Path | None, dict[str, Any]]:
    listed, chosen, path = _resolve(request, choice.template)
    choice.template = chosen
    _, recipients_file = _settings(request)
    ids, recipients_error = _listed_recipients(recipients_file)
    return (
        listed,
        path,
        {
            "recipient_ids": ids,
            "recipients_file": str(recipients_file) if recipients_file else None,
            "recipients_error": recipients_error,
        },
    )


async def _page_context(request: Request, choice: Choice) -> dict[str, Any]:
    listed, path, recipients = await to_thread.run_sync(_files, request, choice)
    return {
        "templates": listed,
        "choice": choice,
        **recipients,
        "shown": await _show(request, choice, path),
    }


@router.get("/", scope=Open.PREVIEW, response_class=HTMLResponse)
async def page(
    request: Request,
    template: TemplateParam = None,
    recipient: TextParam = None,
    fields: TextParam = None,
) -> HTMLResponse:
    return await _render_page(request, "page.html", Choice(template, recipient, fields or ""))


@router.get("/preview/result", scope=Open.PREVIEW, response_class=HTMLResponse)
async def result(
    request: Request,
    template: TemplateParam = None,
    recipient: TextParam = None,
    fields: TextParam = None,
) -> HTMLResponse:
    """The result part of the page alone, for the live update."""
    return await _render_page(request, "result.html", Choice(template, recipient, fields or ""))


async def _render_page(request: Request, page_name: str, choice: Choice) -> HTMLResponse:
    return _html(_pages.get_template(page_name).render(**await _page_context(request, choice)))


@router.get("/preview/version", scope=Open.PREVIEW)
def version(request: Request, template: TemplateParam = None) -> JSONResponse:
    """A value that changes whenever the template file changes (modification time and size)."""
    _, chosen, path = _resolve(request, template)
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        stat = None
    stamp = f"{stat.st_mtime_ns}-{stat.st_size}" if stat is not None else "missing"
    return JSONResponse(
        {"template": chosen, "version": stamp}, headers={"Cache-Control": "no-store"}
    )


@router.get("/preview/preview.js", scope=Open.PUBLIC, include_in_schema=False)
def script() -> Response:
    return Response(
        (STATIC / "preview.js").read_bytes(),
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/preview/style.css", scope=Open.PUBLIC, include_in_schema=False)
def style() -> Response:
    return Response(
        (STATIC / "style.css").read_bytes(),
        media_type="text/css",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def login_page(error: str | None = None, status: int = 401) -> HTMLResponse:
    return _html(_pages.get_template("login.html").render(error=error), status)


@router.post("/preview/login", scope=Open.PUBLIC, include_in_schema=False)
async def login(request: Request) -> Response:
    """Takes a token from the form; keeps it in an HttpOnly, SameSite=Strict cookie."""
    body = (await request.body()).decode("utf-8", "replace")
    secret = (parse_qs(body).get("token") or [""])[0].strip()
    holder = await to_thread.run_sync(authenticate, engine_of(request), secret) if secret else None
    if holder is None:
        return login_page("That token is unknown or revoked.")
    if holder.limited:
        return login_page(
            f"Token {holder.name!r} is limited to some pools; the preview reads every pool a "
            "template names, so it needs a token without --pool.",
            403,
        )
    if not holder.may_preview:
        return login_page(
            f"Token {holder.name!r} has scope {holder.scope.value!r}, which only posts "
            "delivery events; the preview needs a read, redeem or admin token.",
            403,
        )
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        PREVIEW_COOKIE,
        secret,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


def install(app: FastAPI) -> None:
    async def on_login_required(_request: Request, _exc: Exception) -> HTMLResponse:
        return login_page()

    app.add_exception_handler(LoginRequired, on_login_required)
