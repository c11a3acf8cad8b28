"""Who may call which route: every route is declared with what it needs.

:class:`ScopedRouter` is the only way routes enter the app, and its
``add_api_route`` takes a keyword ``scope`` without a default, so a route
that does not say what it needs cannot be written. The scope becomes a
dependency that runs before the route (401 without a valid token, 403
with a token whose scope does not allow the route), is recorded on the
route (``route.scope``) and in the API description (``x-scope``).

Pool limits are the routes' business, through :func:`visible_pool` and
:meth:`Principal.visible`: a pool outside a token's pools is answered
exactly as a pool that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute, APIRouter
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from pools.errors import PoolNotFound
from pools.tokens import Principal, Scope, authenticate
from service.bodies import is_json, unsupported
from service.problems import Problem

#: Cookie of the preview page on a non-loopback address: the token itself, HttpOnly.
PREVIEW_COOKIE = "promomail_token"


class Open(StrEnum):
    """Routes without a token scope."""

    #: Liveness and the API description: no token at all.
    PUBLIC = "public"
    #: The preview page: open on a loopback address, else any valid token in its cookie.
    PREVIEW = "preview"


Needs = Scope | Open
F = TypeVar("F", bound=Callable[..., Any])

_bearer = HTTPBearer(auto_error=False, description="A token from `promomail token create`.")


def engine_of(request: Request) -> Engine:
    engine = request.app.state.engine
    assert isinstance(engine, Engine)
    return engine


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _api_gate(needed: Scope) -> Callable[..., None]:
    def gate(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> None:
        if credentials is None:
            raise _unauthorized("this request needs an 'Authorization: Bearer TOKEN' header")
        principal = authenticate(engine_of(request), credentials.credentials)
        if principal is None:
            raise _unauthorized("the token is unknown or revoked")
        if not principal.permits(needed, reading=request.method in ("GET", "HEAD")):
            raise Problem(
                403,
                f"token {principal.name!r} has scope {principal.scope.value!r}: "
                f"{request.method} {request.url.path} needs scope {needed.value!r}",
            )
        request.state.principal = principal

    return gate


class LoginRequired(Exception):
    """The preview page needs a token first: the handler answers with the form."""


def _preview_gate(request: Request) -> None:
    if request.app.state.preview_open:
        request.state.principal = None
        return
    secret = request.cookies.get(PREVIEW_COOKIE)
    principal = authenticate(engine_of(request), secret) if secret else None
    if principal is None:
        raise LoginRequired()
    if principal.limited:
        # The page reads every pool a template names; a limited token must not see them.
        raise LoginRequired()
    request.state.principal = principal


def _public_gate(request: Request) -> None:
    request.state.principal = None


def gate_for(needs: Needs) -> Callable[..., None]:
    if isinstance(needs, Scope):
        return _api_gate(needs)
    if needs is Open.PREVIEW:
        return _preview_gate
    return _public_gate


def principal(request: Request) -> Principal:
    """The token holder of an API route (its gate has run)."""
    found = request.state.principal
    assert isinstance(found, Principal)
    return found


def visible_pool(holder: Principal, pool_id: str) -> str:
    """``pool_id`` if the token may see it; else the same 404 as for a pool that does not exist."""
    if not holder.sees(pool_id):
        raise PoolNotFound(pool_id)
    return pool_id


def pools_filter(holder: Principal) -> frozenset[str] | None:
    """The pools a list is narrowed to for this token (None: no narrowing)."""
    return holder.pools if holder.limited else None


class ScopedRoute(APIRoute):
    """An API route that knows what it needs; one with a JSON body takes JSON only."""

    scope: Needs

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def json_only(request: Request) -> Response:
            if not is_json(request.headers.get("content-type")):
                raise unsupported(request.headers.get("content-type"), "application/json")
            return await handler(request)

        return json_only


class ScopedRouter(APIRouter):
    """A router whose every route must declare its scope."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(route_class=ScopedRoute, **kwargs)

    def add_api_route(  # type: ignore[override]
        self, path: str, endpoint: Callable[..., Any], *, scope: Needs, **kwargs: Any
    ) -> None:
        if not isinstance(scope, Scope | Open):
            raise TypeError(f"route {path}: scope must be a Scope or Open, not {scope!r}")
        dependencies = [Depends(gate_for(scope)), *(kwargs.pop("dependencies", None) or [])]
        extra = {**(kwargs.pop("openapi_extra", None) or {}), "x-scope": scope.value}
        if not isinstance(scope, Scope):
            kwargs.setdefault("include_in_schema", scope is not Open.PREVIEW)
        super().add_api_route(
            path, endpoint, dependencies=dependencies, openapi_extra=extra, **kwargs
        )
        route = self.routes[-1]
        assert isinstance(route, ScopedRoute)
        route.scope = scope

    def api_route(  # type: ignore[override]
        self, path: str, *, scope: Needs, **kwargs: Any
    ) -> Callable[[F], F]:
        def decorator(func: F) -> F:
            self.add_api_route(path, func, scope=scope, **kwargs)
            return func

        return decorator

    def get(  # type: ignore[override]
        self, path: str, *, scope: Needs, **kwargs: Any
    ) -> Callable[[F], F]:
        return self.api_route(path, scope=scope, methods=["GET"], **kwargs)

    def post(  # type: ignore[override]
        self, path: str, *, scope: Needs, **kwargs: Any
    ) -> Callable[[F], F]:
        return self.api_route(path, scope=scope, methods=["POST"], **kwargs)

    def patch(  # type: ignore[override]
        self, path: str, *, scope: Needs, **kwargs: Any
    ) -> Callable[[F], F]:
        return self.api_route(path, scope=scope, methods=["PATCH"], **kwargs)

    def delete(  # type: ignore[override]
        self, path: str, *, scope: Needs, **kwargs: Any
    ) -> Callable[[F], F]:
        return self.api_route(path, scope=scope, methods=["DELETE"], **kwargs)
