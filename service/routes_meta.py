"""Liveness and the API description: the routes that need no token (the
document's interactive page: :mod:`service.api_docs`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from promomail.pools import StoreError, store_connection
from promomail.service.auth import Open, ScopedRouter, engine_of
from promomail.service.problems import Problem, problem_responses
from promomail.service.schemas import HealthDoc

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
