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

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from pools.db import read_transaction
from pools.models import Code, Issuance, IssuanceKind, Redemption


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


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
            "redeemed_at": _iso(self.redeemed_at),
            "referral": self.referral,
            "mailing": self.mailing,
            "rolled_back_at": _iso(self.rolled_back_at),
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

    @property
    def redeemed(self) -> bool:
        return bool(self.redeemed_by)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "code": self.code,
            "kind": self.kind,
            "mailing": self.mailing,
            "issued_at": _iso(self.issued_at),
            "redeemed": self.redeemed,
            "redeemed_by": list(self.redeemed_by),
            "returned_at": _iso(self.returned_at),
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


def customer_history(engine: Engine, customer_id: str) -> CustomerHistory:
    """Everything issued to ``customer_id`` and every redemption that concerns them."""
    with read_transaction(engine) as conn:
        return history_in(conn, customer_id)


def history_in(conn: Connection, customer_id: str) -> CustomerHistory:
    redemptions = _redemptions(conn, customer_id)
    by_code: dict[int, list[str | None]] = {}
    for record in redemptions:
        if record.live:
            by_code.setdefault(record.code_id, []).append(record.redeemed_by)
    rows = conn.execute(
        select(
            Issuance.pool_id,
            Code.code,
            Issuance.kind,
            Issuance.mailing_id,
            Issuance.issued_at,
            Issuance.code_id,
            Issuance.returned_at,
            Issuance.return_reason,
        )
        .join(Code, Code.id == Issuance.code_id)
        .where(Issuance.customer_id == customer_id)
        .order_by(Issuance.issued_at, Issuance.id)
    )
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
        )
        for row in rows
    ]
    return CustomerHistory(customer_id, issuances, redemptions)


def _redemptions(conn: Connection, customer_id: str) -> list[RedemptionRecord]:
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
    # Two indexed queries rather than one OR: each is served by its own index.
    by_customer = conn.execute(
        select(*columns)
        .join(Code, Code.id == Redemption.code_id)
        .where(Redemption.redeemed_by == customer_id)
    ).all()
    of_their_codes = conn.execute(
        select(*columns)
        .join(Code, Code.id == Redemption.code_id)
        .where(Redemption.code_id.in_(own_codes))
    ).all()
    unique = {row.id: row for row in [*by_customer, *of_their_codes]}
    ordered = sorted(unique.values(), key=lambda row: (row.redeemed_at, row.id))
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
        )
        for row in ordered
    ]
