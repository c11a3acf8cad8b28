"""Delivery events from the mail services: ``POST /api/v1/events/{provider}`` (SPEC 8).

Two routes, because the two kinds of sender prove themselves differently:
``/events/promomail`` (promomail's own form, from a script or any other
service) carries a token of scope ``events``; ``/events/{provider}`` (SES
through SNS, SendGrid, Mailgun, Postmark) carries the service's own
signature or credentials, checked by :mod:`delivery` over the raw body as
received. Both answer 200 with what became of the events, unknown
references included (a service retries any other answer).

Verifying (for SES, a fetch of the signing certificate from SNS, blocking
with its own timeout) and applying run in worker threads, at most
:data:`EVENT_THREADS` of them at a time: a burst of webhooks, or SNS being
slow, leaves the other threads to the checkout.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Path, Request

from promomail.delivery import (
    DeliveryError,
    NotConfigured,
    SnsUnreachable,
    TopicNotAllowed,
    UnreadableBody,
    Unverified,
    WebhookConfig,
    verify_and_parse,
)
from promomail.pools import EventApplier, ReplayedRequest, Scope
from promomail.service.auth import Open, ScopedRouter
from promomail.service.bodies import is_json, unsupported
from promomail.service.problems import Problem, problem_responses
from promomail.service.schemas import OWN_EVENTS_SCHEMA, EventsAppliedDoc

router = ScopedRouter(prefix="/api/v1", tags=["delivery events"])

#: Event requests verified and applied at once, out of the service's threads.
EVENT_THREADS = 8
#: The services that sign their own requests (``promomail`` has a route of its own).
SIGNED = ("ses", "sendgrid", "mailgun", "postmark")
SIGNED_BODY: dict[str, Any] = {
    "required": True,
    "description": "The service's webhook body exactly as it sends it (SNS: text/plain JSON).",
    "content": {
        "application/json": {"schema": {}},
        "text/plain": {"schema": {"type": "string"}},
    },
}


def _problem(error: DeliveryError) -> Problem:
    """The answer to a refused event request; nothing was applied."""
    detail = str(error)
    if isinstance(error, NotConfigured):
        return Problem(404, detail)
    if isinstance(error, Unverified):
        # Postmark proves itself with basic auth: say so, as a 401 should.
        realm = {"postmark": 'Basic realm="promomail events"'}.get(error.provider)
        return Problem(401, detail, headers={"WWW-Authenticate": realm} if realm else None)
    if isinstance(error, TopicNotAllowed):
        return Problem(403, detail)
    if isinstance(error, SnsUnreachable):
        # The way to SNS failed, not the request: a 5xx makes SNS send it again.
        return Problem(502, detail)
    if isinstance(error, UnreadableBody):
        return Problem(400, detail)
    # MalformedEvent: the field at fault is named in the detail.
    return Problem(422, detail)


def _verify_and_apply(
    applier: EventApplier,
    config: WebhookConfig,
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
) -> dict[str, int]:
    now = datetime.now(UTC)
    try:
        batch = verify_and_parse(provider, body, headers, config, now=now)
        applied = applier.apply(provider, batch, now=now)
    except DeliveryError as exc:
        raise _problem(exc) from None
    except ReplayedRequest as exc:
        raise _problem(Unverified(provider, exc.detail)) from None
    return applied.as_dict()


async def _receive(request: Request, provider: str) -> dict[str, int]:
    body = await request.body()
    state = request.app.state
    limiter = getattr(state, "event_limiter", None)
    if limiter is None:
        # Made on first use, in the server's event loop, which it belongs to.
        limiter = state.event_limiter = anyio.CapacityLimiter(EVENT_THREADS)
    async with limiter:
        return await anyio.to_thread.run_sync(
            _verify_and_apply,
            state.event_applier,
            state.webhooks,
            provider,
            body,
            request.headers,
        )


@router.post(
    "/events/promomail",
    scope=Scope.EVENTS,
    response_model=None,
    responses={
        200: {"model": EventsAppliedDoc},
        **problem_responses(400, 401, 403, 413, 415, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": OWN_EVENTS_SCHEMA}},
        }
    },
)
async def events_own(request: Request) -> dict[str, int]:
    """Delivery events in promomail's own form, from a script or any other service.

    Needs a token of scope ``events``. A permanent ``bounce`` or ``dropped``
    gives the message's codes back; ``delivered`` or ``complaint`` keeps them.
    """
    if not is_json(request.headers.get("content-type")):
        raise unsupported(request.headers.get("content-type"), "application/json")
    return await _receive(request, "promomail")


@router.post(
    "/events/{provider}",
    scope=Open.SIGNED,
    response_model=None,
    responses={
        200: {"model": EventsAppliedDoc},
        **problem_responses(400, 401, 403, 404, 413, 422, 502, 503),
    },
    openapi_extra={"requestBody": SIGNED_BODY},
)
async def events_signed(
    request: Request,
    provider: Annotated[str, Path(json_schema_extra={"enum": list(SIGNED)})],
) -> dict[str, int]:
    """A mail service's webhook, verified by the service's own signature or credentials.

    ``ses``: SNS notifications (and subscription confirmations); ``sendgrid``:
    the signed Event Webhook; ``mailgun``: HMAC-signed webhooks;
    ``postmark``: basic auth. A service without its configuration answers 404.
    """
    if provider not in SIGNED:
        raise Problem(
            404, f"there is no event provider {provider!r}: use one of {', '.join(SIGNED)}"
        )
    return await _receive(request, provider)
