"""OpenAPI links: where an answer's values are the next request's parameters.

A client (or a test generating requests from the document) follows them
from a pool it created to that pool's routes, from a batch to its void, from
an uploaded code to its check and redemption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

POOL = "/api/v1/pools/{pool_id}"
CREATED_POOL = {"pool_id": "$response.body#/id"}
SAME_POOL = {"pool_id": "$request.path.pool_id"}


@dataclass(frozen=True)
class Link:
    """From the ``status`` answer of ``method source`` to ``method target``."""

    name: str
    source: tuple[str, str, str]
    target: tuple[str, str]
    parameters: dict[str, str]
    body: dict[str, str] = field(default_factory=dict)


LINKS = (
    *(
        Link(name, ("post", "/api/v1/pools", "201"), target, CREATED_POOL)
        for name, target in (
            ("ShowPool", ("get", POOL)),
            ("EditPool", ("patch", POOL)),
            ("DeletePool", ("delete", POOL)),
            ("ActivatePool", ("post", f"{POOL}/activate")),
            ("ArchivePool", ("post", f"{POOL}/archive")),
            ("UploadCodes", ("post", f"{POOL}/codes")),
            ("GenerateCodes", ("post", f"{POOL}/codes/generate")),
        )
    ),
    Link(
        "VoidBatch",
        ("post", f"{POOL}/codes/generate", "200"),
        ("post", f"{POOL}/batches/{{batch}}/void"),
        {**SAME_POOL, "batch": "$response.body#/batch"},
    ),
    Link(
        "VoidBatch",
        ("post", f"{POOL}/codes", "200"),
        ("post", f"{POOL}/batches/{{batch}}/void"),
        {**SAME_POOL, "batch": "$response.body#/batch"},
    ),
    # A file of one code without a line end is that code.
    Link(
        "CheckCode",
        ("post", f"{POOL}/codes", "200"),
        ("get", "/api/v1/codes/{code}"),
        {"code": "$request.body", "pool": "$request.path.pool_id"},
    ),
    Link(
        "RedeemCode",
        ("post", f"{POOL}/codes", "200"),
        ("post", "/api/v1/redemptions"),
        {},
        {"code": "$request.body", "pool": "$request.path.pool_id"},
    ),
    Link(
        "HoldCode",
        ("post", f"{POOL}/codes", "200"),
        ("post", "/api/v1/holds"),
        {},
        {"code": "$request.body", "pool": "$request.path.pool_id"},
    ),
    Link(
        "ReleaseHold",
        ("post", "/api/v1/holds", "201"),
        ("post", "/api/v1/holds/release"),
        {},
        {"code": "$response.body#/code", "order": "$response.body#/order"},
    ),
    Link(
        "RollBack",
        ("post", "/api/v1/redemptions", "201"),
        ("post", "/api/v1/redemptions/rollback"),
        {},
        {"code": "$response.body#/code"},
    ),
    Link(
        "ShowMailing",
        ("get", "/api/v1/mailings", "200"),
        ("get", "/api/v1/mailings/{mailing_id}"),
        {"mailing_id": "$response.body#/items/0/id"},
    ),
)


def add_links(schema: dict[str, Any]) -> None:
    """Write :data:`LINKS` into the answers of ``schema`` (an OpenAPI document)."""
    paths = schema["paths"]
    for link in LINKS:
        method, path, status = link.source
        target_method, target_path = link.target
        entry: dict[str, Any] = {"operationId": paths[target_path][target_method]["operationId"]}
        if link.parameters:
            entry["parameters"] = link.parameters
        if link.body:
            entry["requestBody"] = link.body
        answer = paths[path][method]["responses"][status]
        answer.setdefault("links", {})[link.name] = entry
