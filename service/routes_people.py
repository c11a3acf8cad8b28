"""Who got what: ``customer``, ``segment``, ``mailings``, ``mailing show``, ``export issuances``."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Path, Query, Request
from pydantic import BeforeValidator, Field

from promomail.pools import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Scope,
    customer_page,
    issuance_page,
    list_mailings,
    parse_expiring_within,
    segment_page,
    show_mailing,
)
from promomail.pools.identifiers import (
    CURSOR_PATTERN,
    EXPIRY_WINDOW_PATTERN,
    MAX_CURSOR_LENGTH,
    MAX_POOL_ID_LENGTH,
    POOL_ID_PATTERN,
)
from promomail.service.auth import ScopedRouter, engine_of, pools_filter, principal
from promomail.service.problems import problem_responses
from promomail.service.schemas import (
    INT32,
    NO_NUL,
    CustomerPageDoc,
    IssuancePageDoc,
    MailingDoc,
    MailingListDoc,
    SegmentPageDoc,
)

router = ScopedRouter(prefix="/api/v1", tags=["history"])
COMMON = (400, 401, 403, 404, 422, 503)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many items.")]
# The form of a cursor; one of that form the list never gave out is a 400
# naming the cursor.
After = Annotated[
    str | None,
    Query(
        pattern=CURSOR_PATTERN,
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        description="The `next` cursor of the previous page (left out: the first page).",
    ),
]
Name = Annotated[str, Path(pattern=NO_NUL, min_length=1, max_length=1000)]
PoolFilter = Annotated[
    str | None, Query(pattern=POOL_ID_PATTERN, min_length=1, max_length=MAX_POOL_ID_LENGTH)
]
Filter = Annotated[str | None, Query(pattern=NO_NUL, min_length=1, max_length=1000)]
PoolRef = Annotated[
    str, Field(pattern=POOL_ID_PATTERN, min_length=1, max_length=MAX_POOL_ID_LENGTH)
]
Count = Annotated[int | None, Query(ge=0, le=INT32)]
_ISO_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def iso_only(value: Any) -> Any:
    """An ISO 8601 date or time: not the Unix seconds pydantic would also read."""
    if isinstance(value, str) and not _ISO_START.match(value):
        raise ValueError("must be an ISO 8601 date or date and time")
    return value


def _doc(model: type) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model}, **problem_responses(*COMMON)}


@router.get(
    "/customers/{customer_id}",
    scope=Scope.READ,
    response_model=None,
    responses=_doc(CustomerPageDoc),
)
def customer(
    request: Request, customer_id: Name, limit: Limit = DEFAULT_LIMIT, after: After = None
) -> dict[str, Any]:
    """``customer``: the codes issued to the customer (``items``) and their redemptions, paged."""
    holder = principal(request)
    page = customer_page(
        engine_of(request), customer_id, pools=pools_filter(holder), after=after, limit=limit
    )
    return page.as_dict()


@router.get("/segments", scope=Scope.READ, response_model=None, responses=_doc(SegmentPageDoc))
def segments(
    request: Request,
    issued_from: Annotated[list[PoolRef] | None, Query(max_length=100)] = None,
    unredeemed_from: Annotated[
        list[PoolRef] | None,
        Query(
            max_length=100,
            description="Customers still holding a usable code from this pool (issued, not "
            "returned, not redeemed, not expired): the code `last_promocode` shows them.",
        ),
    ] = None,
    expiring_within: Annotated[
        str | None,
        Query(
            pattern=EXPIRY_WINDOW_PATTERN,
            description="With `unredeemed_from`: only codes expiring within this duration "
            "from now: whole hours, days or weeks (`36h`, `7d`, `2w`).",
        ),
    ] = None,
    min_issued: Count = None,
    max_issued: Count = None,
    since: Annotated[date | datetime | None, BeforeValidator(iso_only)] = None,
    limit: Limit = DEFAULT_LIMIT,
    after: After = None,
) -> dict[str, Any]:
    """``segment``: customer ids matching, sorted, paged."""
    page = segment_page(
        engine_of(request),
        issued_from=issued_from or [],
        min_issued=min_issued,
        max_issued=max_issued,
        since=since,
        unredeemed_from=unredeemed_from or [],
        expiring_within=(
            parse_expiring_within(expiring_within) if expiring_within is not None else None
        ),
        pools=pools_filter(principal(request)),
        after=after,
        limit=limit,
    )
    return page.as_dict()


@router.get("/mailings", scope=Scope.READ, response_model=None, responses=_doc(MailingListDoc))
def mailings(request: Request) -> dict[str, Any]:
    """``mailings``; a token limited to pools sees the mailings that issued from them,
    their codes counted over its pools alone."""
    views = list_mailings(engine_of(request), pools=pools_filter(principal(request)))
    return {"items": [v.as_dict() for v in views], "next": None}


@router.get(
    "/mailings/{mailing_id}", scope=Scope.READ, response_model=None, responses=_doc(MailingDoc)
)
def mailing(request: Request, mailing_id: Name) -> dict[str, Any]:
    """``mailing show``; for a token limited to pools, as ``GET /mailings`` shows it."""
    return show_mailing(
        engine_of(request), mailing_id, pools=pools_filter(principal(request))
    ).as_dict()


@router.get("/issuances", scope=Scope.READ, response_model=None, responses=_doc(IssuancePageDoc))
def issuances(
    request: Request,
    pool: PoolFilter = None,
    mailing: Filter = None,
    limit: Limit = DEFAULT_LIMIT,
    after: After = None,
) -> dict[str, Any]:
    """``export issuances``: the issuance log, oldest first, paged."""
    page = issuance_page(
        engine_of(request),
        pool=pool,
        mailing=mailing,
        pools=pools_filter(principal(request)),
        after=after,
        limit=limit,
    )
    return page.as_dict()
