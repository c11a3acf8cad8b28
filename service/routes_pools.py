"""Pools and their codes: ``pool …``, ``codes upload|generate|void`` over HTTP."""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Path, Query, Request, Response

from promomail.pools import (
    CodeSpec,
    FileFormat,
    ImportRejected,
    PoolSettings,
    Scope,
    Upload,
    Whitespace,
    activate_pool,
    archive_pool,
    create_pool,
    delete_pool,
    edit_pool,
    generate_codes,
    list_pools,
    pool_document,
    printable,
    rejected_report,
    setting_changes,
    upload_codes,
    void_batch,
)
from promomail.pools.identifiers import MAX_POOL_ID_LENGTH, POOL_ID_PATTERN
from promomail.service.auth import ScopedRouter, engine_of, principal, visible_pool
from promomail.service.bodies import StreamReader, media_type, unsupported
from promomail.service.problems import Problem, problem_responses
from promomail.service.schemas import (
    NO_NUL,
    GenerateRequest,
    GenerationDoc,
    PoolCreate,
    PoolDoc,
    PoolEdit,
    PoolListDoc,
    PoolShowDoc,
    UploadDoc,
    VoidDoc,
)

router = ScopedRouter(prefix="/api/v1", tags=["pools"])
log = logging.getLogger("promomail.service")

PoolId = Annotated[
    str,
    Path(
        pattern=POOL_ID_PATTERN,
        min_length=1,
        max_length=MAX_POOL_ID_LENGTH,
        description="The pool id.",
    ),
]
#: Statuses every pool route may answer besides its success.
COMMON = (400, 401, 403, 404, 409, 413, 415, 422, 503)
UPLOAD_TYPES = {"text/plain": FileFormat.TXT, "text/csv": FileFormat.CSV}


def _doc(model: type, status: int = 200) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model}, **problem_responses(*COMMON)}


@router.get("/pools", scope=Scope.READ, response_model=None, responses=_doc(PoolListDoc))
def pools_list(request: Request) -> dict[str, Any]:
    """``pool list``: every pool the token sees, with its counts."""
    holder = principal(request)
    views = [v for v in list_pools(engine_of(request)) if holder.sees(v.id)]
    return {"items": [v.as_dict() for v in views], "next": None}


@router.get("/pools/{pool_id}", scope=Scope.READ, response_model=None, responses=_doc(PoolShowDoc))
def pool_show(request: Request, pool_id: PoolId) -> dict[str, Any]:
    """``pool show``: settings, counts and the import history."""
    return pool_document(engine_of(request), visible_pool(principal(request), pool_id))


@router.post(
    "/pools",
    scope=Scope.ADMIN,
    status_code=201,
    response_model=None,
    responses=_doc(PoolDoc, 201),
)
def pool_create(request: Request, body: PoolCreate) -> dict[str, Any]:
    """``pool create``: a new pool, a draft unless ``activate``."""
    holder = principal(request)
    if holder.limited:
        raise Problem(
            403,
            f"token {holder.name!r} is limited to pools {', '.join(sorted(holder.pools))}: "
            "it cannot create pools",
        )
    options = body.model_dump(exclude={"name", "id", "activate"})
    settings = PoolSettings.from_options(body.name, **options)
    view = create_pool(engine_of(request), settings, pool_id=body.id, activate=body.activate)
    return view.as_dict()


@router.patch("/pools/{pool_id}", scope=Scope.ADMIN, response_model=None, responses=_doc(PoolDoc))
def pool_edit(request: Request, pool_id: PoolId, body: PoolEdit) -> dict[str, Any]:
    """``pool edit``: only the fields given change; an empty text clears a setting."""
    visible_pool(principal(request), pool_id)
    changes = setting_changes(**body.model_dump())
    return edit_pool(engine_of(request), pool_id, **changes).as_dict()


@router.post(
    "/pools/{pool_id}/activate", scope=Scope.ADMIN, response_model=None, responses=_doc(PoolDoc)
)
def pool_activate(request: Request, pool_id: PoolId) -> dict[str, Any]:
    """``pool activate``: draft → active."""
    visible_pool(principal(request), pool_id)
    return activate_pool(engine_of(request), pool_id).as_dict()


@router.post(
    "/pools/{pool_id}/archive", scope=Scope.ADMIN, response_model=None, responses=_doc(PoolDoc)
)
def pool_archive(request: Request, pool_id: PoolId) -> dict[str, Any]:
    """``pool archive``: no more issuing; the history stays."""
    visible_pool(principal(request), pool_id)
    return archive_pool(engine_of(request), pool_id).as_dict()


@router.delete(
    "/pools/{pool_id}",
    scope=Scope.ADMIN,
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted"}, **problem_responses(*COMMON)},
)
def pool_delete(request: Request, pool_id: PoolId) -> Response:
    """``pool delete``: only a pool that never issued a code."""
    visible_pool(principal(request), pool_id)
    delete_pool(engine_of(request), pool_id)
    return Response(status_code=204)


@router.post(
    "/pools/{pool_id}/codes",
    scope=Scope.ADMIN,
    response_model=None,
    responses=_doc(UploadDoc),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The code file: txt (one code per line) or csv (with a code column).",
            "content": {
                kind: {"schema": {"type": "string", "format": "binary"}} for kind in UPLOAD_TYPES
            },
        }
    },
)
async def codes_upload(
    request: Request,
    pool_id: PoolId,
    whitespace: Whitespace = Whitespace.REJECT,
    skip_invalid: bool = False,
    file: Annotated[
        str,
        Query(
            pattern=NO_NUL, min_length=1, max_length=200, description="The name the import records."
        ),
    ] = "request body",
) -> dict[str, Any]:
    """``codes upload``: the body streams into the import; all or nothing."""
    content_type = request.headers.get("content-type")
    fmt = UPLOAD_TYPES.get(media_type(content_type))
    if fmt is None:
        raise unsupported(content_type, "text/plain or text/csv")
    engine = engine_of(request)
    visible_pool(principal(request), pool_id)
    upload = Upload(file, fmt, stream=StreamReader(request.stream()))  # type: ignore[arg-type]
    run = partial(
        upload_codes, engine, pool_id, [upload], whitespace=whitespace, skip_invalid=skip_invalid
    )
    try:
        [report] = await anyio.to_thread.run_sync(run)
    except ImportRejected as exc:
        refused = await anyio.to_thread.run_sync(rejected_report, engine, pool_id, exc, fmt.value)
        raise Problem(422, str(exc), extra=refused.as_dict()) from exc
    return report.as_dict()


@router.post(
    "/pools/{pool_id}/codes/generate",
    scope=Scope.ADMIN,
    response_model=None,
    responses=_doc(GenerationDoc),
)
def codes_generate(request: Request, pool_id: PoolId, body: GenerateRequest) -> dict[str, Any]:
    """``codes generate``: secure random codes, unique in the pool."""
    visible_pool(principal(request), pool_id)
    spec = CodeSpec(
        length=body.length, alphabet=body.alphabet, prefix=body.prefix, check_digit=body.check_digit
    )
    return asdict(generate_codes(engine_of(request), pool_id, body.count, spec))


@router.post(
    "/pools/{pool_id}/batches/{batch}/void",
    scope=Scope.ADMIN,
    response_model=None,
    responses=_doc(VoidDoc),
)
def codes_void(
    request: Request, pool_id: PoolId, batch: Annotated[int, Path(ge=0, le=2**62)]
) -> dict[str, Any]:
    """``codes void``: the batch's never-issued codes become void.

    A low-stock notice that could not be delivered is answered as failed;
    why (which tells about the server's network) goes to the server log.
    """
    visible_pool(principal(request), pool_id)
    report = void_batch(engine_of(request), pool_id, batch)
    for alert in report.low_stock:
        for line in alert.warnings()[1:]:
            log.warning("%s", printable(line))
    return report.as_dict(details=False)
