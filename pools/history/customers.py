"""A customer's history: every code issued to them, and the redemptions that concern them.

Two kinds of redemption concern a customer: the ones they made themselves
(``redeemed_by``), and redemptions of single-use codes that were issued to
them, whoever redeemed them. The second kind is how referral rewards find the
advocate: a friend's purchase with the advocate's code appears in the
advocate's history as a referral. Redemptions of a shared multi-use code by
other people are not the customer's business and are left out.

Undone events stay in the history: a redemption whose order was cancelled
shows ``rolled_back_at``, and an issuance whose message was never delivered
shows ``returned_at`` and the reason (its code went back to the pool and no
longer counts as redeemed by or for this customer).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.sql.elements import ColumnElement

from promomail.pools.store.clock import iso_seconds
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Code, Issuance, IssuanceKind, Redemption


@dataclass(frozen=True)
class RedemptionRecord:
    pool: str
    code: str
    issued_to: str | None
    redeemed_by: str | None
    order: str | None
    redeemed_at: datetime
    #: True when someone other than the customer redeemed a code issued to them.
    referral: bool
    code_id: int
    #: The mailing that gave the code to ``issued_to``.
    mailing: str | None = None
    rolled_back_at: datetime | None = None
    #: The redemption's own id, the position of a page of history.
    record_id: int = 0

    @property
    def live(self) -> bool:
        return self.rolled_back_at is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "code": self.code,
            "issued_to": self.issued_to,
            "redeemed_by": self.redeemed_by,
            "order": self.order,
            "redeemed_at": iso_seconds(self.redeemed_at),
            "referral": self.referral,
            "mailing": self.mailing,
            "rolled_back_at": iso_seconds(self.rolled_back_at),
        }


@dataclass(frozen=True)
class IssuanceRecord:
    pool: str
    code: str
    kind: str
    mailing: str
    issued_at: datetime
    #: Who redeemed this code, as far as this customer is concerned (None: anonymous).
    redeemed_by: tuple[str | None, ...]
    code_id: int
    returned_at: datetime | None = None
    return_reason: str | None = None
    #: The issuance's own id, the position of a page of history.
    record_id: int = 0

    @property
    def redeemed(self) -> bool:
        return bool(self.redeemed_by)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "code": self.code,
            "kind": self.kind,
            "mailing": self.mailing,
            "issued_at": iso_seconds(self.issued_at),
            "redeemed": self.redeemed,
            "redeemed_by": list(self.redeemed_by),
            "returned_at": iso_seconds(self.returned_at),
            "return_reason": self.return_reason,
        }


@dataclass(frozen=True)
class CustomerHistory:
    customer: str
    issuances: list[IssuanceRecord]
    redemptions: list[RedemptionRecord]

    @property
    def known(self) -> bool:
        """Whether the store has anything at all about this customer."""
        return bool(self.issuances or self.redemptions)

    @property
    def referrals(self) -> list[RedemptionRecord]:
        return [r for r in self.redemptions if r.referral]

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "issuances": [i.as_dict() for i in self.issuances],
            "redemptions": [r.as_dict() for r in self.redemptions],
        }


@dataclass(frozen=True)
class HistoryWindow:
    """A part of a customer's history: for paging, and for front ends limited to some pools.

    Issuances and redemptions are each ordered by their record id; a page
    holds at most ``limit`` of each after the given ids.
    """

    pools: Collection[str] | None = None
    after_issuance: int = 0
    after_redemption: int = 0
    limit: int | None = None


def customer_history(
    engine: Engine, customer_id: str, window: HistoryWindow | None = None
) -> CustomerHistory:
    """Everything issued to ``customer_id`` and every redemption that concerns them."""
    with read_transaction(engine) as conn:
        return history_in(conn, customer_id, window)


def history_in(
    conn: Connection, customer_id: str, window: HistoryWindow | None = None
) -> CustomerHistory:
    part = window or HistoryWindow()
    query = (
        select(
            Issuance.pool_id,
            Code.code,
            Issuance.kind,
            Issuance.mailing_id,
            Issuance.issued_at,
            Issuance.code_id,
            Issuance.returned_at,
            Issuance.return_reason,
            Issuance.id,
        )
        .join(Code, Code.id == Issuance.code_id)
        .where(Issuance.customer_id == customer_id)
    )
    if part.limit is None:
        query = query.order_by(Issuance.issued_at, Issuance.id)
    else:
        query = query.where(Issuance.id > part.after_issuance).order_by(Issuance.id)
        query = query.limit(part.limit)
    if part.pools is not None:
        query = query.where(Issuance.pool_id.in_(part.pools))
    rows = conn.execute(query).all()
    redemptions = _redemptions(conn, customer_id, part)
    # "Redeemed by" of an issuance needs every redemption of its code, not only this page's.
    mentioned = {row.code_id for row in rows}
    everything = redemptions if part.limit is None else _redemptions(conn, customer_id)
    by_code: dict[int, list[str | None]] = {}
    for record in everything:
        if record.live and record.code_id in mentioned:
            by_code.setdefault(record.code_id, []).append(record.redeemed_by)
    issuances = [
        IssuanceRecord(
            pool=row.pool_id,
            code=row.code,
            kind=row.kind,
            mailing=row.mailing_id,
            issued_at=row.issued_at,
            redeemed_by=tuple(by_code.get(row.code_id, ())) if row.returned_at is None else (),
            code_id=row.code_id,
            returned_at=row.returned_at,
            return_reason=row.return_reason,
            record_id=row.id,
        )
        for row in rows
    ]
    return CustomerHistory(customer_id, issuances, redemptions)


def _redemptions(
    conn: Connection, customer_id: str, window: HistoryWindow | None = None
) -> list[RedemptionRecord]:
    part = window or HistoryWindow()
    columns = (
        Redemption.id,
        Redemption.pool_id,
        Code.code,
        Redemption.issued_to,
        Redemption.redeemed_by,
        Redemption.order_id,
        Redemption.redeemed_at,
        Redemption.code_id,
        Redemption.mailing_id,
        Redemption.rolled_back_at,
    )
    own_codes = select(Issuance.code_id).where(
        Issuance.customer_id == customer_id,
        Issuance.kind == IssuanceKind.INITIAL,
        Issuance.exclusive.is_(True),
        Issuance.returned_at.is_(None),
    )
    narrowing: list[ColumnElement[bool]] = []
    if part.pools is not None:
        narrowing.append(Redemption.pool_id.in_(part.pools))
    if part.limit is not None:
        narrowing.append(Redemption.id > part.after_redemption)
    # Two indexed queries rather than one OR: each is served by its own index.
    by_customer = conn.execute(
        select(*columns)
        .join(Code, Code.id == Redemption.code_id)
        .where(Redemption.redeemed_by == customer_id, *narrowing)
        .order_by(Redemption.id)
        .limit(part.limit)
    ).all()
    of_their_codes = conn.execute(
        select(*columns)
        .join(Code, Code.id == Redemption.code_id)
        .where(Redemption.code_id.in_(own_codes), *narrowing)
        .order_by(Redemption.id)
        .limit(part.limit)
    ).all()
    unique = {row.id: row for row in [*by_customer, *of_their_codes]}
    if part.limit is None:
        ordered = sorted(unique.values(), key=lambda row: (row.redeemed_at, row.id))
    else:
        ordered = sorted(unique.values(), key=lambda row: row.id)[: part.limit]
    return [
        RedemptionRecord(
            pool=row.pool_id,
            code=row.code,
            issued_to=row.issued_to,
            redeemed_by=row.redeemed_by,
            order=row.order_id,
            redeemed_at=row.redeemed_at,
            referral=row.redeemed_by != customer_id,
            code_id=row.code_id,
            mailing=row.mailing_id,
            rolled_back_at=row.rolled_back_at,
            record_id=row.id,
        )
        for row in ordered
    ]
