"""Errors as ``application/problem+json`` (RFC 9457), translated at one boundary.

Every refusal of the library (a :class:`pools.errors.PromomailError`) keeps
its message as the problem's ``detail``, which names the pool, code, file
and line at fault, exactly as the command line prints it. What the message
cannot say is the status, chosen here by the error's class. Database
failures (translated by the store) are logged and answered without their
text, which names the server; anything unexpected is a bare 500. No answer
ever carries a traceback.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from promomail.pools import (
    DatabaseFailure,
    ImportRejected,
    InvalidCursor,
    InvalidSetting,
    NotFound,
    PoolError,
    PromomailError,
    RollbackAmbiguous,
    StoreConflict,
    StoreError,
    StoreUnavailable,
    TokenError,
    UnreadableUpload,
    counted,
)
from promomail.pools.identifiers import PATTERN_WORDS, POOL_NAME_PATTERN
from promomail.templating import InvalidTemplate, RecipientError, RenderLimitExceeded

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("promomail.service")

#: Most specific first: the first class an error is an instance of decides.
STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    # An unknown pool, mailing or token, or a roll-back of a redemption that is
    # not there (no such code, or not for that order).
    (NotFound, 404),
    (ImportRejected, 422),
    (UnreadableUpload, 422),
    (InvalidSetting, 422),
    (InvalidCursor, 400),
    (InvalidTemplate, 422),
    (RecipientError, 422),
    (RenderLimitExceeded, 422),
    (TokenError, 422),
    # A refusal in the pool's present state (archived, has issued codes, ...).
    (PoolError, 409),
    # A roll-back without an order of a code redeemed several times without one.
    (RollbackAmbiguous, 409),
    (StoreError, 503),
    (PromomailError, 422),
)


def status_for(error: Exception) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 500


class Problem(Exception):
    """An answer other than success, raised anywhere in a request."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str = "about:blank",
        title: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type
        self.title = title or HTTPStatus(status).phrase
        self.extra = extra or {}
        self.headers = headers or {}

    def document(self) -> dict[str, Any]:
        return {
            **self.extra,
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.document(), status_code=self.status, media_type=MEDIA_TYPE, headers=self.headers
        )


def problem_from(error: PromomailError) -> Problem:
    return Problem(status_for(error), _one_line(str(error)))


def _one_line(message: str) -> str:
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


#: The pattern of every text the API takes (see service.schemas.NO_NUL).
_NO_NUL = r"^[^\x00]*$"


def _message(item: dict[str, Any]) -> str:
    """The validation error in the library's words where it has them."""
    context = item.get("ctx") or {}
    kind = item.get("type")
    value = item.get("input")
    if kind == "string_pattern_mismatch":
        pattern = str(context.get("pattern", ""))
        if pattern == _NO_NUL or (isinstance(value, str) and "\x00" in value):
            return "must not contain a NUL character"
        if pattern == POOL_NAME_PATTERN:
            return "needs something besides spaces"
        words = PATTERN_WORDS.get(pattern.removeprefix("^$|"))
        if words is not None:
            shown = value[:80] + "…" if isinstance(value, str) and len(value) > 80 else value
            return f"{shown!r} {words}"
    if kind == "greater_than_equal" and "ge" in context:
        return f"must be {context['ge']} or more"
    if kind == "less_than_equal" and "le" in context:
        return f"must be {context['le']} or less"
    return str(item.get("msg", ""))


def _validation_problem(error: RequestValidationError) -> Problem:
    errors = [
        {
            "loc": [str(part) for part in item.get("loc", ())],
            "msg": _message(item),
            "type": str(item.get("type", "")),
        }
        for item in error.errors()
    ]
    if any(item["type"] == "json_invalid" for item in errors):
        where = next(item for item in errors if item["type"] == "json_invalid")
        position = where["loc"][-1] if where["loc"] else "?"
        return Problem(400, f"the request body is not valid JSON (at character {position})")
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    place = ".".join(part for part in first["loc"] if part != "body") or "request"
    more = f" (and {counted(len(errors) - 1, 'more problem')})" if len(errors) > 1 else ""
    return Problem(422, f"{place}: {first['msg']}{more}", extra={"errors": errors})


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the request's path answers.

    Each route has one method, so Starlette's own ``Allow`` names only the
    first route whose path matched.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Route every failure of a request through a problem document."""

    async def on_problem(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return exc.response()

    async def on_library(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PromomailError)
        return problem_from(exc).response()

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_problem(exc).response()

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = dict(exc.headers or {})
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = "the request body cannot be read as JSON (is it UTF-8?)"
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed here; use {', '.join(allowed)}"
        return Problem(exc.status_code, detail, headers=headers).response()

    async def on_database(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DatabaseFailure)
        # The message names the server and user: log it, never answer it.
        log.error("%s", exc)
        if isinstance(exc, StoreUnavailable):
            return Problem(503, "the store cannot be reached; try again later").response()
        if isinstance(exc, StoreConflict):
            return Problem(409, "a concurrent change got there first; try again").response()
        return Problem(500, "the store refused the operation").response()

    async def on_anything(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return Problem(500, "internal error; the server log has the details").response()

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(PromomailError, on_library)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(DatabaseFailure, on_database)
    app.add_exception_handler(Exception, on_anything)


#: The problem document, for the API description.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
