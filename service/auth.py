"""Who may call which route: every route is declared with what it needs.

:class:`ScopedRouter` is the only way routes enter the app, and its
``add_api_route`` takes a keyword ``scope`` without a default, so a route
that does not say what it needs cannot be written. The scope becomes a
check the route runs before anything else, even before it reads the body
(401 without a valid token, 403 with a token whose scope does not allow
the route); it is recorded on the route (``route.scope``) and in the API
description (``x-scope``).

Pool limits are the routes' business, through :func:`visible_pool` and
:meth:`Principal.visible`: a pool outside a token's pools is answered
exactly as a pool that does not exist.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute, APIRouter
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from promomail.pools import PoolNotFound, Principal, Scope, authenticate, close_ids
from promomail.service.bodies import is_json, unsupported
from promomail.service.problems import Problem

#: Cookie of the preview page on a non-loopback address: the token itself, HttpOnly.
PREVIEW_COOKIE = "promomail_token"


class Open(StrEnum):
    """Routes without a token scope."""

    #: Liveness and the API description: no token at all.
    PUBLIC = "public"
    #: The preview page: open on a loopback address, else any valid token in its cookie.
    PREVIEW = "preview"
    #: A mail service's webhook: no token; the service's own signature or
    #: credentials, checked by the route over the raw body (SPEC 8).
    SIGNED = "signed"


Needs = Scope | Open
F = TypeVar("F", bound=Callable[..., Any])

#: The security scheme's name in the API description.
BEARER = "bearer"
SECURITY_SCHEMES = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `promomail token create NAME --scope SCOPE`.",
    }
}


def engine_of(request: Request) -> Engine:
    engine = request.app.state.engine
    assert isinstance(engine, Engine)
    return engine


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


def bearer_secret(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    kind, _, secret = header.partition(" ")
    return secret.strip() if kind.lower() == "bearer" and secret.strip() else None


def check_api(request: Request, needed: Scope) -> Principal:
    """The token holder, if the token is valid and its scope allows the route; else 401/403."""
    secret = bearer_secret(request)
    if secret is None:
        raise _unauthorized("this request needs an 'Authorization: Bearer TOKEN' header")
    holder = authenticate(engine_of(request), secret)
    if holder is None:
        raise _unauthorized("the token is unknown or revoked")
    if not holder.permits(needed, reading=request.method in ("GET", "HEAD")):
        raise Problem(
            403,
            f"token {holder.name!r} has scope {holder.scope.value!r}: "
            f"{request.method} {request.url.path} needs scope {needed.value!r}",
        )
    return holder


class LoginRequired(Exception):
    """The preview page needs a token first: the handler answers with the form."""


def check_preview(request: Request) -> Principal | None:
    if request.app.state.preview_open:
        return None
    secret = request.cookies.get(PREVIEW_COOKIE)
    holder = authenticate(engine_of(request), secret) if secret else None
    if holder is None or not holder.may_preview:
        raise LoginRequired()
    return holder


def admit(request: Request, needs: Needs) -> Principal | None:
    """Run the check a route declared; runs in a worker thread (it reads the store)."""
    if isinstance(needs, Scope):
        return check_api(request, needs)
    if needs is Open.PREVIEW:
        return check_preview(request)
    return None


@dataclass
class _Admission:
    """A route's check, waiting to run in the worker thread of its sync endpoint."""

    request: Request
    needs: Needs
    started: bool = False

    def run(self) -> None:
        """Once per request: the check, and the holder where :func:`principal` finds it."""
        if not self.started:
            self.started = True
            self.request.state.principal = admit(self.request, self.needs)


#: Set by the route for the length of one request; the worker thread that runs
#: the endpoint gets a copy of the request's context, this admission with it.
_pending: ContextVar[_Admission | None] = ContextVar("promomail_pending_admission", default=None)


def _is_plain_function(endpoint: Callable[..., Any]) -> bool:
    """A sync endpoint FastAPI calls once in a worker thread (not a coroutine nor a stream)."""
    return inspect.isfunction(endpoint) and not (
        inspect.iscoroutinefunction(endpoint)
        or inspect.isgeneratorfunction(endpoint)
        or inspect.isasyncgenfunction(endpoint)
    )


def _admitting_first(endpoint: F) -> F:
    """``endpoint``, running the request's pending admission first, in the same thread.

    ``functools.wraps`` keeps the signature, annotations and description that
    FastAPI reads off the endpoint.
    """

    @functools.wraps(endpoint)
    def admitted(*args: Any, **kwargs: Any) -> Any:
        pending = _pending.get()
        if pending is not None:
            pending.run()
        return endpoint(*args, **kwargs)

    return admitted  # type: ignore[return-value]


def principal(request: Request) -> Principal:
    """The token holder of an API route (its gate has run)."""
    found = request.state.principal
    assert isinstance(found, Principal)
    return found


def visible_pool(holder: Principal, pool_id: str) -> str:
    """``pool_id`` if the token may see it; else the same 404 as for a pool that does not exist."""
    if not holder.sees(pool_id):
        # Suggestions from its own pools only: the others do not exist for it.
        raise PoolNotFound(pool_id, close_ids(pool_id, holder.pools))
    return pool_id


def pools_filter(holder: Principal) -> frozenset[str] | None:
    """The pools a list is narrowed to for this token (None: no narrowing)."""
    return holder.pools if holder.limited else None


class ScopedRoute(APIRoute):
    """A route that knows what it needs, and checks it before it reads the body.

    Order of checks: token and scope (401/403), then unknown query parameters
    (422), the content type of a JSON body (415), the body itself
    (400/413/422), then the route.

    The token check reads the store, so it runs in a worker thread. A sync
    endpoint runs in one too: there the check runs first thing in the
    endpoint's own thread, one trip to the thread pool instead of two. Should
    anything fail before the endpoint runs, the check runs then, on its own,
    so that a 401/403 still comes before the request's other faults.
    """

    scope: Needs
    #: Whether the endpoint runs the check itself (a sync endpoint; see above).
    admits_in_endpoint: bool

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        plain = _is_plain_function(endpoint)
        if plain:
            endpoint = _admitting_first(endpoint)
        super().__init__(path, endpoint, **kwargs)
        # Dependencies run before the endpoint: with any, the check runs before them.
        self.admits_in_endpoint = plain and not self.dependant.dependencies

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_json = self.body_field is not None
        known_query = {param.alias for param in self.dependant.query_params}

        async def checked(request: Request) -> Response:
            needs = self.scope
            if needs is Open.PUBLIC or needs is Open.SIGNED:
                request.state.principal = None
                return await checked_request(request)
            if not self.admits_in_endpoint:
                request.state.principal = await run_in_threadpool(admit, request, needs)
                return await checked_request(request)
            admission = _Admission(request, needs)
            pending = _pending.set(admission)
            try:
                return await checked_request(request)
            except Exception:
                if not admission.started:
                    # Failed before the endpoint: the token's own fault answers first.
                    await run_in_threadpool(admission.run)
                raise
            finally:
                _pending.reset(pending)

        async def checked_request(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - known_query)
            if unknown:
                # A misspelt filter must not silently widen a list.
                raise Problem(422, f"unknown query parameter {unknown[0]!r}")
            if takes_json and not is_json(request.headers.get("content-type")):
                raise unsupported(request.headers.get("content-type"), "application/json")
            return await handler(request)

        return checked


class ScopedRouter(APIRouter):
    """A router whose every route must declare its scope."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(route_class=ScopedRoute, **kwargs)

    def add_api_route(  # type: ignore[override]
        self, path: str, endpoint: Callable[..., Any], *, scope: Needs, **kwargs: Any
    ) -> None:
        if not isinstance(scope, Scope | Open):
            raise TypeError(f"route {path}: scope must be a Scope or Open, not {scope!r}")
        extra = {**(kwargs.pop("openapi_extra", None) or {}), "x-scope": scope.value}
        if isinstance(scope, Scope):
            extra["security"] = [{BEARER: []}]
        if not isinstance(scope, Scope):
            kwargs.setdefault("include_in_schema", scope is not Open.PREVIEW)
        super().add_api_route(path, endpoint, openapi_extra=extra, **kwargs)
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
