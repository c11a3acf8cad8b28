"""Redemption: single-use once (under real concurrency), multi-use counted, refusals inert."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.exc import IntegrityError

import promomail.pools.after_sending.redemption
from promomail.pools.admin.lifecycle import archive_pool
from promomail.pools.after_sending.redemption import (
    ALREADY_REDEEMED,
    NEVER_ISSUED,
    UNKNOWN_CODE,
    RedemptionResult,
    redeem,
)
from promomail.pools.after_sending.rollback import unredeem
from promomail.pools.codes.counts import pool_counts
from promomail.pools.codes.voiding import void_batch
from promomail.pools.errors import (
    PoolExhausted,
    PromomailError,
    RedemptionNotFound,
    RollbackAmbiguous,
)
from promomail.pools.issuing.claiming import claim, reserve
from promomail.pools.issuing.mailings import show_mailing
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Code, CodeStatus, Issuance, Mailing
from tests.support.racing import (
    redeem_order_when_released,
    redeem_when_released,
    run_together,
    unredeem_when_released,
)
from tests.support.render_helpers import full_snapshot
from tests.support.store_helpers import count_rows, make_pool, snapshot


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
    monkeypatch.setattr(
        promomail.pools.after_sending.redemption, "code_refusal", lambda found, now: None
    )

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
    assert refused.not_found
    assert RedemptionResult(ok=False, code="X", reason="unknown code in pool 'p'").not_found
    assert RedemptionResult(ok=False, code="X", reason="unknown pool 'p'").not_found
    assert not RedemptionResult(ok=False, code="X", reason=ALREADY_REDEEMED).not_found
    assert not RedemptionResult(ok=True, code="X").not_found


# --- retried checkouts: the same order replays --------------------------------


def test_racing_retries_of_one_order_replay_one_redemption(engine: Engine, db_url: str) -> None:
    make_pool(engine, "spring", ["RETRY-1", "OTHER"])
    claim(engine, "spring", "m1", ["advocate"])

    outcomes = run_together(
        redeem_order_when_released,
        [(db_url, "RETRY-1", "buyer", "order-7") for _ in range(12)],
    )

    assert all(ok and reason is None for ok, reason, _ in outcomes), outcomes
    assert sorted(replayed for _, _, replayed in outcomes) == [False] + [True] * 11
    assert count_rows(engine, "redemptions") == 1
    assert _code_row(engine, "RETRY-1").redemptions == 1
    again = redeem(engine, "RETRY-1", customer="buyer", order="order-7")
    assert again.as_dict() == {
        "ok": True,
        "code": "RETRY-1",
        "pool": "spring",
        "issued_to": "advocate",
        "mailing": "m1",
        "redeemed_by": "buyer",
        "order": "order-7",
        "replayed": True,
    }
    other_order = redeem(engine, "RETRY-1", customer="buyer", order="order-8")
    assert other_order.as_dict() == {"ok": False, "reason": ALREADY_REDEEMED}


def test_racing_orders_for_one_code_have_one_winner(engine: Engine, db_url: str) -> None:
    make_pool(engine, "spring", ["RACE-12"])

    outcomes = run_together(
        redeem_order_when_released,
        [(db_url, "RACE-12", f"buyer-{i}", f"order-{i}") for i in range(12)],
    )

    assert sorted(outcomes, key=str) == sorted(
        [(True, None, False)] + [(False, ALREADY_REDEEMED, False)] * 11, key=str
    )
    assert count_rows(engine, "redemptions") == 1


def test_a_replay_is_answered_before_any_other_check(engine: Engine) -> None:
    make_pool(engine, "spring", ["LATE-1"])
    first = redeem(engine, "LATE-1", customer="alice", order="o1")
    with engine.begin() as conn:  # the code was withdrawn after the checkout
        conn.execute(update(Code).values(status=CodeStatus.VOID))

    replay = redeem(engine, "LATE-1", customer="alice", order="o1")

    assert replay.ok and replay.replayed and replay.redeemed_at == first.redeemed_at
    assert redeem(engine, "LATE-1", order="o2").reason == "void code"


def test_multi_use_replay_counts_once(engine: Engine) -> None:
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    claim(engine, "summer", "m1", ["alice"])

    first = redeem(engine, "SUMMER20", customer="alice", order="o1")
    replay = redeem(engine, "SUMMER20", customer="alice", order="o1")
    other = redeem(engine, "SUMMER20", customer="bob", order="o2")

    assert (first.replayed, replay.replayed, other.replayed) == (False, True, False)
    assert replay.as_dict() == {**first.as_dict(), "replayed": True}
    assert _code_row(engine, "SUMMER20").redemptions == 2
    assert count_rows(engine, "redemptions") == 2


def test_five_redemptions_of_a_shared_code_are_one_redeemed_code(engine: Engine) -> None:
    make_pool(engine, "summer", ["SUMMER20", "SUMMER21"], multi_use=True)
    for i in range(5):
        assert redeem(engine, "SUMMER20", customer=f"c{i}", order=f"o{i}").ok

    with read_transaction(engine) as conn:
        counts = pool_counts(conn)["summer"]

    assert (counts.redeemed, counts.redemptions) == (1, 5)
    assert counts.as_dict()["redemptions"] == 5


# --- dry runs ------------------------------------------------------------------


def _refusal_cases(engine: Engine) -> list[tuple[str, dict[str, Any], str]]:
    """(code, options, reason) for every reason a redemption can be refused."""
    make_pool(engine, "one", ["SAME", "ONLY-ONE", "USED"])
    make_pool(engine, "two", ["SAME"])
    make_pool(engine, "gone", ["WITHDRAWN"])
    make_pool(engine, "draft", ["DRAFT-1"], activate=False)
    make_pool(engine, "vip", ["VIP-OLD", "VIP-NEW"], require_issued=True, issued_valid_days=30)
    make_pool(
        engine,
        "window",
        csv_text="code,available_from,available_till\nEARLY,2999-01-01,\nLATE,,2000-01-31\n",
    )
    with engine.connect() as conn:
        batch = conn.execute(select(Code.batch_id).where(Code.code == "WITHDRAWN")).scalar_one()
    void_batch(engine, "gone", batch)
    assert redeem(engine, "USED", order="first").ok
    claim(engine, "vip", "m1", ["alice"])
    with engine.begin() as conn:
        conn.execute(update(Issuance).values(issued_at=utcnow() - timedelta(days=40)))
    return [
        ("NOPE", {}, UNKNOWN_CODE),
        ("ONLY-ONE", {"pool": "two"}, "unknown code in pool 'two'"),
        ("ONLY-ONE", {"pool": "three"}, "unknown pool 'three'"),
        ("SAME", {}, "ambiguous code: it is in pools one, two; name the pool"),
        ("WITHDRAWN", {}, "void code"),
        ("DRAFT-1", {}, "pool 'draft' is not active yet"),
        ("USED", {"order": "second"}, ALREADY_REDEEMED),
        ("EARLY", {}, "not valid yet: valid from 2999-01-01 00:00 UTC"),
        ("LATE", {}, "expired: valid until 2000-02-01 00:00 UTC"),
        ("VIP-NEW", {}, NEVER_ISSUED),
        ("VIP-OLD", {"customer": "alice"}, "valid for 30 days"),
    ]


def test_dry_run_gives_every_refusal_and_writes_nothing(engine: Engine) -> None:
    cases = _refusal_cases(engine)
    for code, options, reason in cases:
        before = full_snapshot(engine)
        dry = redeem(engine, code, dry_run=True, **options)
        assert full_snapshot(engine) == before, (code, "a dry run wrote")
        assert not dry.ok and dry.reason is not None and reason in dry.reason, (code, dry)
        real = redeem(engine, code, **options)
        assert real.as_dict() == dry.as_dict(), code
        assert full_snapshot(engine) == before, (code, "a refusal wrote")


def test_dry_run_answers_what_a_redemption_would(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    claim(engine, "spring", "m1", ["alice"])
    claim(engine, "summer", "m2", ["bob"])

    for code, customer in (("SP-1", "friend"), ("SUMMER20", "bob")):
        before = full_snapshot(engine)
        dry = redeem(engine, code, customer=customer, order="o1", dry_run=True)
        assert full_snapshot(engine) == before
        assert dry.dry_run and dry.ok
        real = redeem(engine, code, customer=customer, order="o1")
        assert real.as_dict() == dry.as_dict()
        assert real.redemptions == dry.redemptions == 1
        # A dry run of the same order now: it would replay.
        before = full_snapshot(engine)
        again = redeem(engine, code, customer=customer, order="o1", dry_run=True)
        assert full_snapshot(engine) == before
        assert again.as_dict() == {**real.as_dict(), "replayed": True}
    assert redeem(engine, "SP-1", order="o2", dry_run=True).reason == ALREADY_REDEEMED


# --- campaign attribution --------------------------------------------------------


def test_redemptions_credit_the_mailing_that_gave_the_code(engine: Engine) -> None:
    make_pool(engine, "spring", [f"SP-{i}" for i in range(6)])
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    with engine.begin() as conn:  # what a render records about itself
        for mailing in ("welcome", "later"):
            conn.execute(insert(Mailing).values(id=mailing, template="t.j2", started_at=utcnow()))
    given = claim(engine, "spring", "welcome", ["a", "b", "c", "d"])
    claim(engine, "summer", "welcome", ["a", "b"])
    claim(engine, "spring", "later", ["e"])

    first = redeem(engine, given["a"], customer="a", order="o1")
    assert (first.issued_to, first.mailing) == ("a", "welcome")
    assert redeem(engine, given["b"], customer="friend", order="o2").mailing == "welcome"
    shared = redeem(engine, "SUMMER20", customer="b", order="o3")
    assert (shared.issued_to, shared.mailing) == ("b", "welcome")
    stranger = redeem(engine, "SUMMER20", customer="z", order="o4")
    assert (stranger.issued_to, stranger.mailing) == (None, None)
    assert redeem(engine, "SP-5", order="o5").mailing is None  # never issued

    view = show_mailing(engine, "welcome")
    assert (view.codes_issued, view.redeemed) == (6, 3)
    assert view.redemption_rate == pytest.approx(0.5)
    assert view.as_dict()["redeemed"] == 3 and view.as_dict()["redemption_rate"] == 0.5
    later = show_mailing(engine, "later")
    assert (later.codes_issued, later.redeemed, later.redemption_rate) == (1, 0, 0.0)

    unredeem(engine, given["a"], order="o1")
    assert show_mailing(engine, "welcome").redeemed == 2


# --- roll-backs ------------------------------------------------------------------


def test_roll_back_then_another_order_redeems(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    claim(engine, "spring", "m1", ["alice"])
    first = redeem(engine, "SP-1", customer="alice", order="o1")

    undone = unredeem(engine, "SP-1", order="o1")

    assert undone.as_dict() | {"redeemed_at": None, "rolled_back_at": None} == {
        "ok": True,
        "code": "SP-1",
        "pool": "spring",
        "order": "o1",
        "issued_to": "alice",
        "mailing": "m1",
        "redeemed_by": "alice",
        "redeemed_at": None,
        "rolled_back_at": None,
        "redemptions": 0,
    }
    assert undone.redeemed_at == first.redeemed_at
    row = _code_row(engine, "SP-1")
    assert (row.redemptions, row.redeemed_at, row.status) == (0, None, CodeStatus.ISSUED)

    second = redeem(engine, "SP-1", customer="bob", order="o2")
    assert second.ok and not second.replayed and second.issued_to == "alice"
    # The rolled-back order is a new redemption now, and it is refused.
    assert redeem(engine, "SP-1", order="o1").reason == ALREADY_REDEEMED
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT order_id, rolled_back_at IS NOT NULL FROM redemptions ORDER BY id")
        ).all()
    assert [(order, bool(undone_flag)) for order, undone_flag in rows] == [
        ("o1", True),
        ("o2", False),
    ]


def test_roll_back_twice_is_refused_and_changes_nothing(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    redeem(engine, "SP-1", order="o1")
    unredeem(engine, "SP-1", order="o1")

    before = full_snapshot(engine)
    for code, order in (("SP-1", "o1"), ("SP-1", "o9"), ("NOPE", "o1")):
        with pytest.raises(RedemptionNotFound) as caught:
            unredeem(engine, code, order=order)
        assert code in str(caught.value) and order in str(caught.value)
        assert isinstance(caught.value, PromomailError)
    assert full_snapshot(engine) == before


def test_roll_back_of_a_multi_use_code_drops_its_count(engine: Engine) -> None:
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    results = [redeem(engine, "SUMMER20", customer=f"c{i}", order=f"o{i}") for i in range(3)]

    assert unredeem(engine, "SUMMER20", order="o0").redemptions == 2

    row = _code_row(engine, "SUMMER20")
    assert row.redemptions == 2 and row.redeemed_at == results[1].redeemed_at
    with read_transaction(engine) as conn:
        counts = pool_counts(conn)["summer"]
    assert (counts.redeemed, counts.redemptions, counts.available) == (1, 2, 1)


def test_roll_back_of_a_code_redeemed_before_issue_puts_it_back(engine: Engine) -> None:
    make_pool(engine, "flyer", ["FLY-1"])
    redeem(engine, "FLY-1", customer="walk-in", order="o1")
    with read_transaction(engine) as conn:
        assert pool_counts(conn)["flyer"].available == 0

    unredeem(engine, "FLY-1", order="o1")

    with read_transaction(engine) as conn:
        assert pool_counts(conn)["flyer"].available == 1
    assert claim(engine, "flyer", "m1", ["ann"]) == {"ann": "FLY-1"}


def test_roll_back_racing_a_redemption_stays_consistent(engine: Engine, db_url: str) -> None:
    codes = [f"RB-{i}" for i in range(4)]
    make_pool(engine, "spring", codes)
    for code in codes:
        assert redeem(engine, code, customer="first", order="o1").ok

    for code in codes:
        undone, second = run_together(
            _roll_back_or_redeem, [(db_url, code, "undo"), (db_url, code, "redeem")]
        )
        row = _code_row(engine, code)
        with engine.connect() as conn:
            live = conn.execute(
                text(
                    "SELECT order_id FROM redemptions WHERE code_id = :c AND rolled_back_at IS NULL"
                ),
                {"c": row.id},
            ).all()
        assert undone == "rolled back"
        # Either the redemption came first (refused) or after the roll-back (won).
        assert second in ((True, None, False), (False, ALREADY_REDEEMED, False))
        expected = ["o2"] if second[0] else []
        assert [r[0] for r in live] == expected
        assert row.redemptions == len(expected)


def _roll_back_or_redeem(barrier: Any, url: str, code: str, action: str) -> Any:
    if action == "undo":
        return unredeem_when_released(barrier, url, code, "o1")
    return redeem_order_when_released(barrier, url, code, "second", "o2")


def test_roll_back_without_an_order_undoes_the_one_made_without_one(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1", "SP-2"])
    claim(engine, "spring", "m1", ["alice"])
    redeem(engine, "SP-1", customer="alice")
    redeem(engine, "SP-2", customer="walk-in", order="o2")

    undone = unredeem(engine, "SP-1")

    assert (undone.code, undone.order, undone.issued_to, undone.redemptions) == (
        "SP-1",
        None,
        "alice",
        0,
    )
    assert undone.as_dict()["order"] is None
    assert _code_row(engine, "SP-1").redemptions == 0
    assert redeem(engine, "SP-1", customer="alice", order="o3").ok
    # A redemption made with an order is undone by naming it, never without.
    before = full_snapshot(engine)
    with pytest.raises(RedemptionNotFound) as caught:
        unredeem(engine, "SP-2")
    message = "code 'SP-2' has no redemption made without an order to roll back"
    assert str(caught.value) == message
    assert full_snapshot(engine) == before


def test_roll_back_without_an_order_of_a_shared_code(engine: Engine) -> None:
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    redeem(engine, "SUMMER20", customer="c1", order="o1")
    redeem(engine, "SUMMER20", customer="c2")

    assert unredeem(engine, "SUMMER20").redemptions == 1
    with pytest.raises(RedemptionNotFound):
        unredeem(engine, "SUMMER20")

    redeem(engine, "SUMMER20", customer="c3")
    redeem(engine, "SUMMER20", customer="c4")
    before = full_snapshot(engine)
    with pytest.raises(RollbackAmbiguous) as caught:
        unredeem(engine, "SUMMER20")
    assert "2 live redemptions made without an order" in str(caught.value)
    assert full_snapshot(engine) == before, "an ambiguous roll-back undoes none"
    assert unredeem(engine, "SUMMER20", order="o1").redemptions == 2


@pytest.mark.parametrize("multi_use", [False, True])
def test_racing_roll_backs_without_an_order_undo_one_redemption(
    engine: Engine, db_url: str, multi_use: bool
) -> None:
    codes = [f"NO-{i}" for i in range(3)]
    make_pool(engine, "till", codes, multi_use=multi_use)
    for code in codes:
        redeem(engine, code, customer="walk-in")
        if multi_use:
            redeem(engine, code, customer="online", order="o1")

    for code in codes:
        answers = run_together(unredeem_when_released, [(db_url, code, None)] * 2)
        assert sorted(answers) == [
            "code " + repr(code) + " has no redemption made without an order to roll back",
            "rolled back",
        ]
        with engine.connect() as conn:
            live = conn.execute(
                text(
                    "SELECT r.order_id FROM redemptions r JOIN codes c ON c.id = r.code_id"
                    " WHERE c.code = :code AND r.rolled_back_at IS NULL"
                ),
                {"code": code},
            ).all()
        assert [row[0] for row in live] == (["o1"] if multi_use else [])
        assert _code_row(engine, code).redemptions == len(live)


def test_the_database_refuses_a_second_live_redemption(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    redeem(engine, "SP-1", order="o1")
    redeem(engine, "SUMMER20", order="o1")
    insert = (
        "INSERT INTO redemptions (pool_id, code_id, order_id, redeemed_at, exclusive) "
        "SELECT pool_id, id, :order, :now, :exclusive FROM codes WHERE code = :code"
    )
    for code, order, exclusive in (("SP-1", "o2", True), ("SUMMER20", "o1", False)):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(insert),
                {"order": order, "now": utcnow(), "exclusive": exclusive, "code": code},
            )
    with engine.begin() as conn:  # a rolled-back redemption does not count
        conn.execute(text("UPDATE redemptions SET rolled_back_at = redeemed_at"))
        conn.execute(
            text(insert), {"order": "o1", "now": utcnow(), "exclusive": True, "code": "SP-1"}
        )
