"""The checkout: check a code, hold it, redeem it, roll a redemption back.

``redeem``, ``hold``, ``release`` and ``unredeem`` of the command line.
Statuses: a redemption answers 201, a replay of the same order 200, a
refusal 409 with ``ok: false`` and the reason as ``redeem`` prints it; an
unknown code 404 (here and on ``GET /codes/{code}``). A hold answers the
same way (201 new, 200 the same order again, 409 refused, 404 unknown). A
roll-back of a redemption or a release of a hold that does not exist (no
such code, or nothing of that order's on it) answers 404: the thing to undo
is not there. A roll-back without ``order`` undoes the code's one live
redemption made without an order; several of them answer 409 (which one is
meant cannot be told).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from promomail.pools import (
    UNKNOWN_CODE,
    HoldResult,
    Principal,
    RedemptionResult,
    ReleaseResult,
    Scope,
    code_pools,
    hold_code,
    redeem,
    release_hold,
    unredeem,
)
from promomail.pools.identifiers import MAX_ID_LENGTH, MAX_POOL_ID_LENGTH, POOL_ID_PATTERN
from promomail.service.auth import ScopedRouter, engine_of, principal
from promomail.service.problems import Problem, problem_responses
from promomail.service.schemas import (
    NO_NUL,
    HoldDoc,
    HoldRequest,
    RedemptionDoc,
    RedemptionRequest,
    ReleaseDoc,
    ReleaseRequest,
    RollbackDoc,
    RollbackRequest,
)

router = ScopedRouter(prefix="/api/v1", tags=["redemption"])
# Routes answer JSONResponse with their result's document, which is JSON as it
# is: a dict returned would be walked again by FastAPI's encoder.
COMMON = (400, 401, 403, 404, 413, 415, 422, 503)
Text = Annotated[str | None, Query(pattern=NO_NUL, min_length=1, max_length=MAX_ID_LENGTH)]


def _refusal(result: RedemptionResult | HoldResult | ReleaseResult) -> Problem:
    reason = result.reason or "refused"
    status = 404 if result.not_found else 409
    return Problem(
        status,
        f"code {result.code!r} refused: {reason}",
        type="about:blank" if status == 404 else "urn:promomail:redemption-refused",
        extra={"ok": False, "reason": reason},
    )


def _pool_for(holder: Principal, engine: Engine, code: str, pool: str | None) -> str | None:
    """The pool to redeem in, seen through the token's pools: others do not exist for it."""
    if not holder.limited:
        return pool
    if pool is not None:
        if not holder.sees(pool):
            raise _refusal(RedemptionResult(False, code, reason=f"unknown pool {pool!r}"))
        return pool
    candidates = holder.visible(code_pools(engine, code))
    if not candidates:
        raise _refusal(RedemptionResult(False, code, reason=UNKNOWN_CODE))
    if len(candidates) > 1:
        reason = f"ambiguous code: it is in pools {', '.join(candidates)}; name the pool"
        raise _refusal(RedemptionResult(False, code, reason=reason))
    return candidates[0]


@router.get(
    "/codes/{code}",
    scope=Scope.REDEEM,
    response_model=None,
    responses={200: {"model": RedemptionDoc}, **problem_responses(*COMMON)},
)
def code_check(
    request: Request,
    code: Annotated[str, Path(pattern=NO_NUL, min_length=1, max_length=1000)],
    pool: Annotated[
        str | None, Query(pattern=POOL_ID_PATTERN, min_length=1, max_length=MAX_POOL_ID_LENGTH)
    ] = None,
    customer: Text = None,
    order: Text = None,
) -> JSONResponse:
    """``redeem --dry-run``: whether the code would redeem now; changes nothing."""
    engine = engine_of(request)
    chosen = _pool_for(principal(request), engine, code, pool)
    result = redeem(engine, code, customer=customer, order=order, pool=chosen, dry_run=True)
    if result.not_found:
        raise _refusal(result)
    return JSONResponse(result.as_dict())


@router.post(
    "/redemptions",
    scope=Scope.REDEEM,
    status_code=201,
    response_model=None,
    responses={
        201: {"model": RedemptionDoc, "description": "Redeemed"},
        200: {"model": RedemptionDoc, "description": "A replay of the same order"},
        **problem_responses(409, *COMMON),
    },
)
def redemption_create(request: Request, body: RedemptionRequest) -> JSONResponse:
    """``redeem``: 201 redeemed, 200 a replay of the same order, 409 refused with the reason."""
    engine = engine_of(request)
    chosen = _pool_for(principal(request), engine, body.code, body.pool)
    result = redeem(engine, body.code, customer=body.customer, order=body.order, pool=chosen)
    if not result.ok:
        raise _refusal(result)
    return JSONResponse(result.as_dict(), status_code=200 if result.replayed else 201)


@router.post(
    "/redemptions/rollback",
    scope=Scope.REDEEM,
    response_model=None,
    responses={200: {"model": RollbackDoc}, **problem_responses(409, *COMMON)},
)
def redemption_rollback(request: Request, body: RollbackRequest) -> JSONResponse:
    """``unredeem``: the order was cancelled; its redemption of the code is undone.

    Without ``order``: the code's one live redemption made without an order.
    """
    engine = engine_of(request)
    chosen = _pool_for(principal(request), engine, body.code, None)
    return JSONResponse(unredeem(engine, body.code, order=body.order, pool=chosen).as_dict())


@router.post(
    "/holds",
    scope=Scope.REDEEM,
    status_code=201,
    response_model=None,
    responses={
        201: {"model": HoldDoc, "description": "Held"},
        200: {"model": HoldDoc, "description": "The same order again (the hold may be longer)"},
        **problem_responses(409, *COMMON),
    },
)
def hold_create(request: Request, body: HoldRequest) -> JSONResponse:
    """``hold``: the checkout started; nobody else may redeem the code for ``seconds``."""
    engine = engine_of(request)
    chosen = _pool_for(principal(request), engine, body.code, body.pool)
    result = hold_code(
        engine,
        body.code,
        order=body.order,
        customer=body.customer,
        pool=chosen,
        length=timedelta(seconds=body.seconds),
    )
    if not result.ok:
        raise _refusal(result)
    return JSONResponse(result.as_dict(), status_code=200 if result.replayed else 201)


@router.post(
    "/holds/release",
    scope=Scope.REDEEM,
    response_model=None,
    responses={200: {"model": ReleaseDoc}, **problem_responses(409, *COMMON)},
)
def hold_release(request: Request, body: ReleaseRequest) -> JSONResponse:
    """``release``: the payment failed or the cart was abandoned; the hold ends now."""
    engine = engine_of(request)
    chosen = _pool_for(principal(request), engine, body.code, body.pool)
    result = release_hold(engine, body.code, order=body.order, pool=chosen)
    if not result.ok:
        raise _refusal(result)
    return JSONResponse(result.as_dict())
