"""Per-customer pools: which codes a customer holds now, before a top-up."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update

from promomail.pools.after_sending.redemption import redeem
from promomail.pools.errors import PoolNotFound
from promomail.pools.issuing.claiming import claim
from promomail.pools.issuing.per_customer import current_codes
from promomail.pools.store.clock import utcnow
from promomail.pools.store.models import Code, Issuance
from tests.support.store_helpers import make_pool


def _ids(engine: Engine, *codes: str) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        found = dict(
            (code, code_id)
            for code_id, code in conn.execute(
                select(Code.id, Code.code).where(Code.code.in_(codes))
            )
        )
    return [(found[code], code) for code in codes]


def test_current_codes_oldest_first_and_without_redeemed(engine: Engine) -> None:
    make_pool(engine, "ref", [f"R{i}" for i in range(1, 10)], per_customer=3)
    first = claim(engine, "ref", "m1", ["alice", "bob"])
    second = claim(engine, "ref", "m2", ["alice"])
    # m2's issue is older than m1's: the order follows issue time, not code ids.
    with engine.begin() as conn:
        conn.execute(
            update(Issuance)
            .where(Issuance.mailing_id == "m2")
            .values(issued_at=utcnow() - timedelta(days=1))
        )

    with engine.connect() as conn:
        held = current_codes(conn, "ref", ["alice", "bob", "carol", "alice"])
    assert held == {
        "alice": _ids(engine, second["alice"], first["alice"]),
        "bob": _ids(engine, first["bob"]),
        "carol": [],
    }

    assert redeem(engine, second["alice"], customer="friend").ok
    with engine.connect() as conn:
        assert current_codes(conn, "ref", ["alice"]) == {"alice": _ids(engine, first["alice"])}


def test_codes_that_can_no_longer_be_redeemed_are_not_current(engine: Engine) -> None:
    make_pool(
        engine, "vip", ["V1", "V2", "V3"], per_customer=2, require_issued=True, issued_valid_days=10
    )
    codes = claim(engine, "vip", "m1", ["alice", "bob", "carol"])
    with engine.begin() as conn:
        conn.execute(
            update(Issuance)
            .where(Issuance.customer_id == "bob")
            .values(issued_at=utcnow() - timedelta(days=10, seconds=1))
        )
        conn.execute(
            update(Code)
            .where(Code.code == codes["carol"])
            .values(available_till=datetime(2001, 1, 1))
        )

    with engine.connect() as conn:
        held = current_codes(conn, "vip", ["alice", "bob", "carol"])
    assert held == {"alice": _ids(engine, codes["alice"]), "bob": [], "carol": []}
    with engine.connect() as conn:
        later = utcnow() + timedelta(days=11)
        assert current_codes(conn, "vip", ["alice"], now=later) == {"alice": []}


def test_many_customers_and_unknown_pool(engine: Engine) -> None:
    make_pool(engine, "ref", ["R1", "R2"], per_customer=1)
    codes = claim(engine, "ref", "m1", ["c0700", "c1100"])
    customers = [f"c{i:04d}" for i in range(1200)]

    with engine.connect() as conn:
        held = current_codes(conn, "ref", customers)
        with pytest.raises(PoolNotFound):
            current_codes(conn, "nope", ["c0700"])

    assert list(held) == customers
    assert {c: v for c, v in held.items() if v} == {
        "c0700": _ids(engine, codes["c0700"]),
        "c1100": _ids(engine, codes["c1100"]),
    }
