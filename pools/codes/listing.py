"""Listing a pool's codes with their state, customer and times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, not_, select
from sqlalchemy.sql.elements import ColumnElement

from promomail.pools.admin.lifecycle import load_pool
from promomail.pools.choices import CodeState
from promomail.pools.codes.counts import held_now, issuable_now
from promomail.pools.store.clock import iso_seconds, utcnow
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Code, CodeStatus, Issuance, IssuanceKind


@dataclass(frozen=True)
class CodeEntry:
    code: str
    state: str
    customer: str | None
    mailing: str | None
    issued_at: datetime | None
    redeemed_at: datetime | None
    redemptions: int
    batch: int
    available_till: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "state": self.state,
            "customer": self.customer,
            "mailing": self.mailing,
            "issued_at": iso_seconds(self.issued_at),
            "redeemed_at": iso_seconds(self.redeemed_at),
            "redemptions": self.redemptions,
            "batch": self.batch,
            "available_till": iso_seconds(self.available_till),
        }


def _state_filter(state: CodeState, now: datetime) -> ColumnElement[bool]:
    available = Code.status == CodeStatus.AVAILABLE
    filters: dict[CodeState, ColumnElement[bool]] = {
        CodeState.AVAILABLE: issuable_now(now),
        CodeState.PENDING: and_(available, Code.issuable_until > now, Code.issue_start > now),
        CodeState.RESERVED: held_now(),
        CodeState.ISSUED: and_(
            Code.status == CodeStatus.ISSUED,
            Code.redemptions == 0,
            # NOT over the nullable token would drop the codes without one.
            not_(func.coalesce(held_now(), False)),
        ),
        CodeState.REDEEMED: Code.redemptions > 0,
        CodeState.EXPIRED: and_(available, Code.issuable_until <= now),
        CodeState.VOID: Code.status == CodeStatus.VOID,
    }
    return filters[state]


def _state_of(
    status: str,
    held: bool,
    redemptions: int,
    issue_start: datetime | None,
    issuable_until: datetime,
    now: datetime,
) -> CodeState:
    if redemptions:
        return CodeState.REDEEMED
    if held:
        return CodeState.RESERVED
    if status != CodeStatus.AVAILABLE:
        return CodeState(status)
    if issuable_until <= now:
        return CodeState.EXPIRED
    if issue_start is not None and issue_start > now:
        return CodeState.PENDING
    return CodeState.AVAILABLE


def list_codes(
    engine: Engine, pool_id: str, *, state: CodeState | None = None, limit: int | None = 100
) -> list[CodeEntry]:
    now = utcnow()
    held = func.coalesce(held_now(), False).label("held")
    query = select(Code, held).where(Code.pool_id == pool_id).order_by(Code.id)
    if state is not None:
        query = query.where(_state_filter(state, now))
    if limit is not None:
        query = query.limit(limit)
    with read_transaction(engine) as conn:
        load_pool(conn, pool_id)
        codes = conn.execute(query).all()
        first_issue: dict[int, tuple[str, str, datetime]] = {}
        ids = [row.id for row in codes]
        for start in range(0, len(ids), 500):
            issues = conn.execute(
                select(
                    Issuance.code_id, Issuance.customer_id, Issuance.mailing_id, Issuance.issued_at
                )
                .where(
                    Issuance.code_id.in_(ids[start : start + 500]),
                    Issuance.kind == IssuanceKind.INITIAL,
                    Issuance.returned_at.is_(None),
                )
                .order_by(Issuance.issued_at.desc())
            )
            for code_id, customer, mailing, issued_at in issues:
                first_issue[code_id] = (customer, mailing, issued_at)
    entries = []
    for row in codes:
        issue = first_issue.get(row.id)
        entries.append(
            CodeEntry(
                row.code,
                _state_of(
                    row.status,
                    bool(row.held),
                    row.redemptions,
                    row.issue_start,
                    row.issuable_until,
                    now,
                ),
                issue[0] if issue else None,
                issue[1] if issue else None,
                issue[2] if issue else None,
                row.redeemed_at,
                row.redemptions,
                row.batch_id,
                row.available_till,
            )
        )
    return entries
