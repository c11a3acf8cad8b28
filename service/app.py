"""The service's ASGI app: the API, the preview page and their shared set-up.

Store calls are synchronous SQLAlchemy, so routes are plain ``def`` (or hand
their work to a thread): they run in anyio's worker threads, at most
:data:`THREADS` at a time, and the engine's connection pool has one
connection per thread, so a request never waits for a connection while a
thread sits idle. Several processes may share one PostgreSQL store: every
rule is enforced by the database itself (see the library), none by state
kept in a process. SQLite is for one process: its threads share the file's
single writer, each write waiting its turn (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy import Engine

from promomail.delivery import WebhookConfig
from promomail.pools import EventApplier, StoreConfig, open_engine
from promomail.service import api_docs, preview, problems
from promomail.service.access_log import AccessLog
from promomail.service.auth import SECURITY_SCHEMES, ScopedRoute, ScopedRouter
from promomail.service.bodies import BodyLimit
from promomail.service.hosts import HostCheck, HostRule
from promomail.service.links import add_links
from promomail.service.routes_events import router as events_router
from promomail.service.routes_meta import router as meta_router
from promomail.service.routes_people import router as people_router
from promomail.service.routes_pools import router as pools_router
from promomail.service.routes_redeem import router as redeem_router
from promomail.templating import TemplateProcesses

#: Worker threads for store calls, and connections in each process's pool.
THREADS = 32
ROUTERS: tuple[ScopedRouter, ...] = (
    meta_router,
    # /api/docs and the Swagger UI files it loads, from the installed package.
    api_docs.router,
    pools_router,
    redeem_router,
    people_router,
    events_router,
    preview.router,
)


@dataclass(frozen=True)
class ServiceConfig:
    db_url: str
    host: str = "127.0.0.1"
    #: The port listened on; 0 when not known (then any port passes the host check).
    port: int = 8025
    templates: Path | None = None
    recipients: Path | None = None
    #: The mail services' webhook settings; None: read from the environment
    #: (``PROMOMAIL_SNS_TOPICS`` …) when the app is made, once.
    webhooks: WebhookConfig | None = None


def open_service_engine(db_url: str) -> Engine:
    options = {"pool_size": THREADS, "max_overflow": 0, "pool_timeout": 30}
    return open_engine(StoreConfig(db_url, engine_options=options, prepared_statements=True))


def create_app(config: ServiceConfig, engine: Engine | None = None) -> FastAPI:
    """The app on ``config``'s store; ``engine`` (if given) is used and not disposed."""
    # Read before the store is opened: a bad setting stops the server at start.
    webhooks = (
        config.webhooks if config.webhooks is not None else WebhookConfig.from_env(os.environ)
    )
    own_engine = engine is None
    store = engine if engine is not None else open_service_engine(config.db_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(templates.close)
            if own_engine:
                store.dispose()

    app = FastAPI(
        title="promomail",
        version="1",
        summary="Promo-code pools, redemption at checkout and the issuance history.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.engine = store
    app.state.webhooks = webhooks
    # One for the server: concurrent webhook requests share transactions.
    app.state.event_applier = EventApplier(store)
    # Started on first use: a server nobody previews on runs no template process.
    templates = app.state.template_processes = TemplateProcesses(
        config.db_url, preload=[preview.__name__]
    )
    app.state.templates = config.templates
    app.state.recipients = config.recipients
    app.state.preview_open = preview.is_loopback(config.host)
    for router in ROUTERS:
        # Appended as they are, so each keeps the scope it was declared with.
        for route in router.routes:
            assert isinstance(route, ScopedRoute)
            app.router.routes.append(route)
    problems.install(app)
    preview.install(app)
    app.add_middleware(BodyLimit)
    rule = HostRule.for_address(config.host, config.port)
    if rule is not None:
        # Outside the rest: a request for another host is answered before anything runs.
        app.add_middleware(HostCheck, rule=rule)
    # Outermost: every answer is logged, those of the checks above included.
    app.add_middleware(AccessLog)
    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's description, plus the bearer scheme the routes' ``security`` names
    and the links from one operation's answer to the next operation."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        add_links(schema)
        app.openapi_schema = schema
    return app.openapi_schema
