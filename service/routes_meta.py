"""Liveness and the API description: the routes that need no token."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text

from pools import StoreError, store_connection
from service.auth import Open, ScopedRouter, engine_of
from service.problems import Problem, problem_responses
from service.schemas import HealthDoc

router = ScopedRouter(tags=["service"])
OPENAPI_URL = "/api/v1/openapi.json"


@router.get(
    "/healthz",
    scope=Open.PUBLIC,
    response_model=None,
    responses={200: {"model": HealthDoc}, **problem_responses(503)},
)
def healthz(request: Request) -> dict[str, Any]:
    """Liveness, and whether the store answers (503 when it does not)."""
    try:
        with store_connection(engine_of(request)) as conn:
            conn.execute(text("SELECT 1"))
    except StoreError as exc:
        raise Problem(503, "the store cannot be reached") from exc
    return {"status": "ok", "store": "reachable"}


@router.get(OPENAPI_URL, scope=Open.PUBLIC, include_in_schema=False)
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/api/docs", scope=Open.PUBLIC, include_in_schema=False)
def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title="promomail API")
