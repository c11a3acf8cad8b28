"""Redemption: single-use once (under real concurrency), multi-use counted, refusals inert."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from racing import redeem_when_released, run_together
from sqlalchemy import Engine, select, text, update
from store_helpers import count_rows, make_pool, snapshot

import pools.redemption
from pools.claiming import claim, reserve
from pools.clock import utcnow
from pools.counts import pool_counts
from pools.errors import PoolExhausted
from pools.models import Code, CodeStatus, Issuance
from pools.pool_admin import archive_pool
from pools.redemption import ALREADY_REDEEMED, NEVER_ISSUED, RedemptionResult, redeem
from pools.voiding import void_batch


def _code_row(engine: Engine, code: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Code).where(Code.code == code)).one()


def test_single_use_is_redeemed_once(engine: Engine) -> None:
    make_pool(engine, "spring", ["SPRING-A", "SPRING-B"])
    claim(engine, "spring", "m1", ["alice"])
    issued = _code_row(engine, "SPRING-A")

    first = redeem(engine, "SPRING-A", customer="alice", order="order-1")

    assert first.ok and first.redemptions == 1
    assert first.as_dict() == {
        "ok": True,
        "code": "SPRING-A",
        "pool": "spring",
        "issued_to": "alice",
        "mailing": "m1",
        "redeemed_by": "alice",
        "order": "order-1",
        "replayed": False,
    }
    row = _code_row(engine, "SPRING-A")
    assert row.redemptions == 1 and row.status == CodeStatus.ISSUED
    assert row.redeemed_at is not None and issued.redeemed_at is None

    before = snapshot(engine)
    for customer, order in (("mallory", "order-2"), (None, None), ("alice", None)):
        again = redeem(engine, "SPRING-A", customer=customer, order=order)
        assert again.as_dict() == {"ok": False, "reason": ALREADY_REDEEMED}
    # The same order again is a retried checkout: the same success, nothing new.
    replay = redeem(engine, "SPRING-A", customer="alice", order="order-1")
    assert replay.as_dict() == {**first.as_dict(), "replayed": True}
    assert replay.redeemed_at == first.redeemed_at
    assert snapshot(engine) == before
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT issued_to, redeemed_by, order_id, pool_id FROM redemptions")
        ).all()
    assert [tuple(r) for r in rows] == [("alice", "alice", "order-1", "spring")]


def test_concurrent_redeemers_of_one_code_have_one_winner(engine: Engine, db_url: str) -> None:
    make_pool(engine, "spring", ["RACE-1", "OTHER"])
    claim(engine, "spring", "m1", ["advocate"])

    outcomes = run_together(
        redeem_when_released, [(db_url, "RACE-1", f"buyer-{i}") for i in range(8)]
    )

    assert sorted(outcomes, key=str) == sorted(
        [(True, None)] + [(False, ALREADY_REDEEMED)] * 7, key=str
    )
    assert count_rows(engine, "redemptions") == 1
    assert _code_row(engine, "RACE-1").redemptions == 1
    assert _code_row(engine, "OTHER").redemptions == 0


def test_the_database_guard_holds_without_the_precheck(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redeemer that read the code before another one won still loses, in the UPDATE."""
    make_pool(engine, "spring", ["ONCE"])
    assert redeem(engine, "ONCE", customer="first").ok
    monkeypatch.setattr(pools.redemption, "_refusal", lambda found, now: None)

    before = snapshot(engine)
    late = redeem(engine, "ONCE", customer="second")

    assert late.as_dict() == {"ok": False, "reason": ALREADY_REDEEMED}
    assert snapshot(engine) == before


def test_code_redeemed_before_issue_is_never_mailed(engine: Engine) -> None:
    make_pool(engine, "flyer", ["FLY-1", "FLY-2"])

    result = redeem(engine, "FLY-2", customer="walk-in")

    assert result.ok and result.issued_to is None and result.redeemed_by == "walk-in"
    assert _code_row(engine, "FLY-2").status == CodeStatus.ISSUED
    with engine.connect() as conn:
        assert pool_counts(conn)["flyer"].available == 1
    with pytest.raises(PoolExhausted):
        claim(engine, "flyer", "m1", ["ann", "bob"])
    assert claim(engine, "flyer", "m1", ["ann"]) == {"ann": "FLY-1"}


def test_reserved_code_redeemed_leaves_the_reservation(engine: Engine) -> None:
    make_pool(engine, "flyer", ["FLY-1"])
    reservation = reserve(engine, "flyer", 1, scope="m1")
    assert [c.code for c in reservation.codes] == ["FLY-1"]

    assert redeem(engine, "FLY-1").ok

    row = _code_row(engine, "FLY-1")
    assert row.status == CodeStatus.ISSUED and row.reserved_token is None


def test_require_issued_refuses_unissued_and_stale_codes(engine: Engine) -> None:
    make_pool(engine, "vip", ["VIP-1", "VIP-2"], require_issued=True, issued_valid_days=30)

    before = snapshot(engine)
    refused = redeem(engine, "VIP-1", customer="alice")
    assert refused.as_dict() == {"ok": False, "reason": NEVER_ISSUED}
    assert snapshot(engine) == before

    claim(engine, "vip", "m1", ["alice", "bob"])
    with engine.begin() as conn:
        conn.execute(update(Issuance).values(issued_at=utcnow() - timedelta(days=31, hours=1)))
        conn.execute(
            update(Issuance)
            .where(Issuance.customer_id == "bob")
            .values(issued_at=utcnow() - timedelta(days=29))
        )
    alice_code = claim(engine, "vip", "m1", ["alice"])["alice"]
    bob_code = claim(engine, "vip", "m1", ["bob"])["bob"]

    before = snapshot(engine)
    stale = redeem(engine, alice_code, customer="alice")
    assert not stale.ok
    assert stale.reason is not None and "valid for 30 days" in stale.reason
    assert snapshot(engine) == before

    fresh = redeem(engine, bob_code, customer="bob")
    assert fresh.ok and fresh.issued_to == "bob"


def test_multi_use_counts_every_redemption(engine: Engine) -> None:
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    claim(engine, "summer", "m1", ["alice", "bob"])

    results = [
        redeem(engine, "SUMMER20", customer=customer, order=f"o{i}")
        for i, customer in enumerate(["alice", "bob", "carol", "alice", None])
    ]

    assert all(r.ok for r in results)
    assert [r.redemptions for r in results] == [1, 2, 3, 4, 5]
    assert [r.issued_to for r in results] == ["alice", "bob", None, "alice", None]
    row = _code_row(engine, "SUMMER20")
    assert row.redemptions == 5
    assert row.redeemed_at == results[0].redeemed_at  # the first redemption is kept
    assert row.status == CodeStatus.AVAILABLE  # a shared code is never consumed
    assert count_rows(engine, "redemptions") == 5


def test_availability_window(engine: Engine) -> None:
    make_pool(
        engine,
        "window",
        csv_text=(
            "code,available_from,available_till\n"
            "WIN-1,2030-03-01T10:00:00,2030-03-31\n"
            "WIN-2,2030-03-01T10:00:00,2030-03-31\n"
        ),
    )
    start = datetime(2030, 3, 1, 10)
    end = datetime(2030, 4, 1)  # a date-only end means "through that day"

    before = snapshot(engine)
    early = redeem(engine, "WIN-1", now=start - timedelta(microseconds=1))
    late = redeem(engine, "WIN-1", now=end)
    assert not early.ok and early.reason == "not valid yet: valid from 2030-03-01 10:00 UTC"
    assert not late.ok and late.reason == "expired: valid until 2030-04-01 00:00 UTC"
    assert snapshot(engine) == before

    assert redeem(engine, "WIN-1", now=start).ok
    assert redeem(engine, "WIN-2", now=end - timedelta(microseconds=1)).ok


def test_unknown_void_and_ambiguous_codes(engine: Engine) -> None:
    make_pool(engine, "one", ["SAME", "ONLY-ONE"])
    make_pool(engine, "two", ["SAME"])
    make_pool(engine, "gone", ["WITHDRAWN"])
    with engine.connect() as conn:
        batch = conn.execute(select(Code.batch_id).where(Code.code == "WITHDRAWN")).scalar_one()
    void_batch(engine, "gone", batch)

    before = snapshot(engine)
    assert redeem(engine, "NOPE").as_dict() == {"ok": False, "reason": "unknown code"}
    assert redeem(engine, "only-one").reason == "unknown code"  # codes match exactly
    assert redeem(engine, "ONLY-ONE", pool="two").reason == "unknown code in pool 'two'"
    assert redeem(engine, "ONLY-ONE", pool="three").reason == "unknown pool 'three'"
    assert redeem(engine, "WITHDRAWN").reason == "void code"
    ambiguous = redeem(engine, "SAME", customer="alice")
    assert ambiguous.reason == "ambiguous code: it is in pools one, two; name the pool"
    assert snapshot(engine) == before

    chosen = redeem(engine, "SAME", customer="alice", pool="two")
    assert chosen.ok and chosen.pool == "two"
    with engine.connect() as conn:
        rows = conn.execute(select(Code.pool_id, Code.redemptions).where(Code.code == "SAME"))
        counts = {pool_id: redemptions for pool_id, redemptions in rows}
    assert counts == {"one": 0, "two": 1}


def test_pool_status(engine: Engine) -> None:
    make_pool(engine, "draft", ["DRAFT-1"], activate=False)
    make_pool(engine, "old", ["OLD-1", "OLD-2"])
    claim(engine, "old", "m1", ["alice"])
    archive_pool(engine, "old")

    assert redeem(engine, "DRAFT-1").reason == "pool 'draft' is not active yet"
    kept = redeem(engine, "OLD-1", customer="alice")
    assert kept.ok and kept.issued_to == "alice"


def test_result_dataclass_refusal_shape() -> None:
    refused = RedemptionResult(ok=False, code="X", reason="unknown code")
    assert refused.as_dict() == {"ok": False, "reason": "unknown code"}
