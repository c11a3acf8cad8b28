"""Checkout holds: one live hold per code (under real concurrency), the holder alone redeems.

Time is the test's: every call that depends on it is given ``now``, so a
hold runs out when the test says so, with nothing running in between.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text, update

import promomail.pools.after_sending.holds
import promomail.pools.after_sending.redemption
from promomail.pools.after_sending.checkout import held_elsewhere_reason
from promomail.pools.after_sending.holds import (
    MULTI_USE_NEEDS_NO_HOLD,
    HoldResult,
    ReleaseResult,
    check_hold_length,
    hold_code,
    parse_hold_duration,
    release_hold,
)
from promomail.pools.after_sending.redemption import ALREADY_REDEEMED, NEVER_ISSUED, redeem
from promomail.pools.after_sending.rollback import unredeem
from promomail.pools.choices import DEFAULT_HOLD
from promomail.pools.codes.counts import PoolCounts, pool_counts
from promomail.pools.codes.voiding import void_batch
from promomail.pools.errors import InvalidSetting
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Code, Issuance
from tests.support.racing import hold_when_released, redeem_order_when_released, run_together
from tests.support.render_helpers import full_snapshot
from tests.support.store_helpers import make_pool

#: The moment every test starts from (whole seconds, so ends are exact).
T0 = datetime(2030, 6, 1, 12, 0, 0)


def _counts(engine: Engine, pool: str, now: datetime = T0) -> PoolCounts:
    with read_transaction(engine) as conn:
        return pool_counts(conn, [pool], now)[pool]


def _hold_columns(engine: Engine, code: str) -> tuple[Any, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(Code.hold_order, Code.hold_until).where(Code.code == code)).one()
    return row.hold_order, row.hold_until


# --- holding and redeeming ------------------------------------------------------


def test_the_holder_redeems_and_the_hold_ends(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1", "SP-2"])
    claim(engine, "spring", "m1", ["alice"])
    before = _counts(engine, "spring")

    held = hold_code(engine, "SP-1", order="o1", customer="alice", now=T0)

    assert held.as_dict() == {
        "ok": True,
        "code": "SP-1",
        "pool": "spring",
        "order": "o1",
        "expires_at": "2030-06-01T12:15:00",
        "replayed": False,
    }
    assert held.expires_at == T0 + DEFAULT_HOLD
    # A hold is counted as held and moves no other count.
    assert _counts(engine, "spring") == replace(before, held=1)

    done = redeem(engine, "SP-1", customer="alice", order="o1", now=T0 + timedelta(minutes=5))

    assert done.ok and done.issued_to == "alice" and not done.replayed
    assert _hold_columns(engine, "SP-1") == (None, None)
    assert _counts(engine, "spring") == replace(before, redeemed=1, redemptions=1)


def test_other_orders_are_refused_while_the_hold_lasts(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    claim(engine, "spring", "m1", ["alice"])
    assert hold_code(engine, "SP-1", order="o1", length=timedelta(seconds=90), now=T0).ok
    until = T0 + timedelta(seconds=90)
    reason = "held by another order until 2030-06-01 12:01:30 UTC"
    assert held_elsewhere_reason(until) == reason

    before = full_snapshot(engine)
    almost = until - timedelta(microseconds=1)
    for options in ({"order": "o2"}, {"order": None}, {"order": "o2", "customer": "alice"}):
        for dry_run in (True, False):
            refused = redeem(engine, "SP-1", now=almost, dry_run=dry_run, **options)
            assert refused.as_dict() == {"ok": False, "reason": reason}, (options, dry_run)
        # Another order's hold is refused the same way.
        other = options["order"] or "o3"
        assert hold_code(engine, "SP-1", order=other, now=almost).reason == reason
    assert full_snapshot(engine) == before
    # The holder's dry run says it would redeem.
    assert redeem(engine, "SP-1", order="o1", now=almost, dry_run=True).ok


def test_an_expired_hold_no_longer_counts(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1", "SP-2"])
    assert hold_code(engine, "SP-1", order="o1", length=timedelta(seconds=30), now=T0).ok
    end = T0 + timedelta(seconds=30)
    assert _counts(engine, "spring", end - timedelta(microseconds=1)).held == 1
    assert _counts(engine, "spring", end).held == 0

    # Nothing ran in between: the row still names the order, and counts for nothing.
    assert _hold_columns(engine, "SP-1") == ("o1", end)
    assert release_hold(engine, "SP-1", order="o1", now=end).reason == (
        "order 'o1' holds nothing on code 'SP-1'"
    )
    taken = hold_code(engine, "SP-1", order="o2", now=end)
    assert taken.ok and not taken.replayed
    assert _hold_columns(engine, "SP-1") == ("o2", end + DEFAULT_HOLD)

    # Once that hold ran out too, any order redeems.
    later = end + DEFAULT_HOLD
    done = redeem(engine, "SP-1", order="o3", now=later)
    assert done.ok
    assert _hold_columns(engine, "SP-1") == (None, None)


def test_the_holding_order_again_is_a_replay_that_may_extend(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    first = hold_code(engine, "SP-1", order="o1", length=timedelta(minutes=15), now=T0)

    # Shorter than what is left: the hold stays as it was.
    again = hold_code(
        engine, "SP-1", order="o1", length=timedelta(minutes=1), now=T0 + timedelta(minutes=2)
    )
    assert again.as_dict() == {**first.as_dict(), "replayed": True}
    # Longer: it is extended.
    longer = hold_code(
        engine, "SP-1", order="o1", length=timedelta(hours=1), now=T0 + timedelta(minutes=3)
    )
    assert longer.replayed and longer.expires_at == T0 + timedelta(hours=1, minutes=3)
    assert _counts(engine, "spring").held == 1
    # An order whose hold ran out holds nothing: holding again is a new hold.
    late = T0 + timedelta(hours=2)
    fresh = hold_code(engine, "SP-1", order="o1", now=late)
    assert fresh.ok and not fresh.replayed and fresh.expires_at == late + DEFAULT_HOLD


def test_ends_are_whole_seconds_rounded_up(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    held = hold_code(engine, "SP-1", order="o1", now=T0 + timedelta(microseconds=1))
    assert held.expires_at == T0 + DEFAULT_HOLD + timedelta(seconds=1)


def test_release_ends_the_hold_at_once(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    assert hold_code(engine, "SP-1", order="o1", now=T0).ok

    before = full_snapshot(engine)
    for code, order, reason in (
        ("SP-1", "o2", "order 'o2' holds nothing on code 'SP-1'"),
        ("NOPE", "o1", "unknown code"),
    ):
        refused = release_hold(engine, code, order=order, now=T0)
        assert refused.as_dict() == {"ok": False, "reason": reason}
        assert refused.not_found
    assert release_hold(engine, "SP-1", order="o1", pool="nope", now=T0).reason == (
        "unknown pool 'nope'"
    )
    assert full_snapshot(engine) == before

    released = release_hold(engine, "SP-1", order="o1", now=T0 + timedelta(minutes=1))
    assert released.as_dict() == {
        "ok": True,
        "code": "SP-1",
        "pool": "spring",
        "order": "o1",
        "released_at": "2030-06-01T12:01:00",
    }
    assert _counts(engine, "spring").held == 0
    # Released once: a second release finds nothing, and another order redeems.
    assert release_hold(engine, "SP-1", order="o1", now=T0).not_found
    assert redeem(engine, "SP-1", order="o2", now=T0 + timedelta(minutes=2)).ok


def test_a_release_names_the_pool_when_the_order_holds_the_code_twice(engine: Engine) -> None:
    make_pool(engine, "one", ["SAME"])
    make_pool(engine, "two", ["SAME"])
    for pool in ("one", "two"):
        assert hold_code(engine, "SAME", order="o1", pool=pool, now=T0).ok

    twice = release_hold(engine, "SAME", order="o1", now=T0)
    assert twice.reason == "order 'o1' holds code 'SAME' in pools one, two; name the pool"
    assert not twice.not_found
    assert release_hold(engine, "SAME", order="o1", pool="two", now=T0).pool == "two"
    # Now only one pool's code is held by the order: no pool needed.
    assert release_hold(engine, "SAME", order="o1", now=T0).pool == "one"


# --- refusals ---------------------------------------------------------------------


def _refusal_cases(engine: Engine) -> list[tuple[str, dict[str, Any], str]]:
    """(code, options, reason) for every reason a hold can be refused."""
    make_pool(engine, "one", ["SAME", "ONLY-ONE", "USED", "TAKEN"])
    make_pool(engine, "two", ["SAME"])
    make_pool(engine, "gone", ["WITHDRAWN"])
    make_pool(engine, "draft", ["DRAFT-1"], activate=False)
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    make_pool(engine, "vip", ["VIP-OLD", "VIP-NEW"], require_issued=True, issued_valid_days=30)
    make_pool(
        engine,
        "window",
        csv_text="code,available_from,available_till\nEARLY,2999-01-01,\nLATE,,2000-01-31\n",
    )
    with engine.connect() as conn:
        batch = conn.execute(select(Code.batch_id).where(Code.code == "WITHDRAWN")).scalar_one()
    void_batch(engine, "gone", batch)
    assert redeem(engine, "USED", order="first", now=T0).ok
    assert hold_code(engine, "TAKEN", order="first", now=T0).ok
    claim(engine, "vip", "m1", ["alice"])
    with engine.begin() as conn:
        conn.execute(update(Issuance).values(issued_at=T0 - timedelta(days=40)))
    return [
        ("NOPE", {}, "unknown code"),
        ("ONLY-ONE", {"pool": "two"}, "unknown code in pool 'two'"),
        ("ONLY-ONE", {"pool": "three"}, "unknown pool 'three'"),
        ("SAME", {}, "ambiguous code: it is in pools one, two; name the pool"),
        ("WITHDRAWN", {}, "void code"),
        ("DRAFT-1", {}, "pool 'draft' is not active yet"),
        ("USED", {}, ALREADY_REDEEMED),
        # The redeeming order itself: its code is redeemed, there is nothing to hold.
        ("USED", {"order": "first"}, ALREADY_REDEEMED),
        ("TAKEN", {}, held_elsewhere_reason(T0 + DEFAULT_HOLD)),
        ("SUMMER20", {}, MULTI_USE_NEEDS_NO_HOLD),
        ("EARLY", {}, "not valid yet: valid from 2999-01-01 00:00 UTC"),
        ("LATE", {}, "expired: valid until 2000-02-01 00:00 UTC"),
        ("VIP-NEW", {}, NEVER_ISSUED),
        ("VIP-OLD", {"customer": "alice"}, "valid for 30 days"),
    ]


def test_every_refusal_of_a_hold_writes_nothing(engine: Engine) -> None:
    for code, options, reason in _refusal_cases(engine):
        options = {"order": "o-new", **options}
        before = full_snapshot(engine)
        refused = hold_code(engine, code, now=T0 + timedelta(minutes=1), **options)
        assert full_snapshot(engine) == before, (code, "a refused hold wrote")
        assert not refused.ok and refused.reason is not None and reason in refused.reason, (
            code,
            refused,
        )
        assert refused.as_dict() == {"ok": False, "reason": refused.reason}
        assert refused.not_found == reason.startswith("unknown")
        if code not in ("SUMMER20", "USED"):
            # Where a redemption would be refused too, it says the same.
            dry = redeem(engine, code, now=T0 + timedelta(minutes=1), dry_run=True, **options)
            assert dry.reason == refused.reason, code


def test_hold_lengths_outside_30_seconds_to_24_hours_are_refused(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    before = full_snapshot(engine)
    for length in (timedelta(seconds=29), timedelta(hours=24, seconds=1), timedelta(0)):
        with pytest.raises(InvalidSetting, match="30 seconds to 24 hours"):
            hold_code(engine, "SP-1", order="o1", length=length, now=T0)
    assert full_snapshot(engine) == before
    assert hold_code(engine, "SP-1", order="o1", length=timedelta(hours=24), now=T0).ok


@given(
    number=st.integers(0, 999_999),
    unit=st.sampled_from(["", "s", "m", "h", "d"]),
    padding=st.sampled_from(["", " ", "\t"]),
)
def test_hold_durations_parse_to_30_seconds_through_24_hours(
    number: int, unit: str, padding: str
) -> None:
    seconds = number * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}[unit]
    text_value = f"{padding}{number}{unit}{padding}"
    if 30 <= seconds <= 86_400:
        assert parse_hold_duration(text_value) == timedelta(seconds=seconds)
    else:
        with pytest.raises(InvalidSetting, match="30s to 24h"):
            parse_hold_duration(text_value)


@pytest.mark.parametrize("bad", ["", "15 m", "-30s", "1.5h", "15min", "m", "30s30s", "1e3"])
def test_what_is_not_a_duration_is_refused(bad: str) -> None:
    with pytest.raises(InvalidSetting, match="is not a duration"):
        parse_hold_duration(bad)
    assert check_hold_length(DEFAULT_HOLD) == DEFAULT_HOLD


def test_result_shapes() -> None:
    assert HoldResult(ok=False, code="X", reason="unknown pool 'p'").not_found
    assert not HoldResult(ok=False, code="X", reason=MULTI_USE_NEEDS_NO_HOLD).not_found
    assert ReleaseResult(ok=False, code="X", reason="order 'o' holds nothing on code 'X'").not_found
    assert not ReleaseResult(ok=True, code="X", released_at=T0).not_found


# --- what ends or keeps a hold ------------------------------------------------------


def test_voiding_a_held_code_ends_its_hold(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    assert hold_code(engine, "SP-1", order="o1", now=utcnow()).ok
    with engine.connect() as conn:
        batch = conn.execute(select(Code.batch_id).where(Code.code == "SP-1")).scalar_one()
    assert void_batch(engine, "spring", batch).voided == 1
    assert _hold_columns(engine, "SP-1") == (None, None)
    assert _counts(engine, "spring", utcnow()).held == 0
    assert redeem(engine, "SP-1", order="o1").reason == "void code"


def test_a_roll_back_never_brings_a_hold_back(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    claim(engine, "spring", "m1", ["alice"])
    assert hold_code(engine, "SP-1", order="o1", now=T0).ok
    assert redeem(engine, "SP-1", order="o1", now=T0).ok

    unredeem(engine, "SP-1", order="o1", now=T0 + timedelta(minutes=1))

    assert _hold_columns(engine, "SP-1") == (None, None)
    assert _counts(engine, "spring").held == 0
    # The refunded code is free for any order: held by another, redeemed by it.
    assert hold_code(engine, "SP-1", order="o2", now=T0 + timedelta(minutes=2)).ok
    assert redeem(engine, "SP-1", order="o1", now=T0 + timedelta(minutes=3)).reason == (
        held_elsewhere_reason(T0 + timedelta(minutes=17))
    )
    assert redeem(engine, "SP-1", order="o2", now=T0 + timedelta(minutes=3)).ok


def test_a_hold_of_a_code_never_issued_leaves_it_available(engine: Engine) -> None:
    make_pool(engine, "flyer", ["FLY-1", "FLY-2"])
    before = _counts(engine, "flyer")
    assert hold_code(engine, "FLY-1", order="walk-in", now=T0).ok
    assert _counts(engine, "flyer") == replace(before, held=1)
    assert redeem(engine, "FLY-1", order="walk-in", now=T0).ok
    assert _counts(engine, "flyer") == replace(
        before, available=1, issued=1, redeemed=1, redemptions=1
    )


# --- the database keeps the rules, whatever was read before --------------------------


def test_the_database_keeps_another_order_from_redeeming_a_held_code(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redeemer that read the code before the hold committed still loses, in the UPDATE."""
    make_pool(engine, "spring", ["SP-1"])
    assert hold_code(engine, "SP-1", order="o1", now=T0).ok
    monkeypatch.setattr(
        promomail.pools.after_sending.redemption, "hold_refusal", lambda found, order, now: None
    )

    before = full_snapshot(engine)
    for order in ("o2", None):
        late = redeem(engine, "SP-1", order=order, now=T0)
        assert late.reason == held_elsewhere_reason(T0 + DEFAULT_HOLD)
    assert full_snapshot(engine) == before


def test_the_database_keeps_a_second_order_from_taking_a_hold(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_pool(engine, "spring", ["SP-1"])
    assert hold_code(engine, "SP-1", order="o1", now=T0).ok
    monkeypatch.setattr(
        promomail.pools.after_sending.holds, "hold_refusal", lambda found, order, now: None
    )

    before = full_snapshot(engine)
    late = hold_code(engine, "SP-1", order="o2", now=T0)

    assert late.reason == held_elsewhere_reason(T0 + DEFAULT_HOLD)
    assert full_snapshot(engine) == before


# --- real processes at the same moment -------------------------------------------------


def test_twelve_orders_hold_one_code_at_once_and_one_holds_it(engine: Engine, db_url: str) -> None:
    make_pool(engine, "spring", ["RACE-1", "OTHER"])

    outcomes = run_together(hold_when_released, [(db_url, "RACE-1", f"o{i}") for i in range(12)])

    winners = [i for i, (ok, _) in enumerate(outcomes) if ok]
    assert len(winners) == 1, outcomes
    holder, until = _hold_columns(engine, "RACE-1")
    assert holder == f"o{winners[0]}"
    reasons = {reason for ok, reason in outcomes if not ok}
    assert reasons == {held_elsewhere_reason(until)}
    assert _counts(engine, "spring", utcnow()).held == 1
    assert _hold_columns(engine, "OTHER") == (None, None)


def test_the_holders_redemption_races_eleven_other_orders_and_wins(
    engine: Engine, db_url: str
) -> None:
    make_pool(engine, "spring", ["RACE-1"])
    claim(engine, "spring", "m1", ["alice"])
    assert hold_code(engine, "RACE-1", order="o0").ok

    outcomes = run_together(
        redeem_order_when_released,
        [(db_url, "RACE-1", f"buyer-{i}", f"o{i}") for i in range(12)],
    )

    assert outcomes[0] == (True, None, False), outcomes
    for ok, reason, _ in outcomes[1:]:
        # Refused while the hold lasted, or because the holder had redeemed.
        assert not ok and reason is not None, outcomes
        assert reason == ALREADY_REDEEMED or reason.startswith("held by another order until")
    with engine.connect() as conn:
        live = conn.execute(
            text("SELECT order_id FROM redemptions WHERE rolled_back_at IS NULL")
        ).all()
    assert [r[0] for r in live] == ["o0"]
    assert _hold_columns(engine, "RACE-1") == (None, None)


def test_a_released_hold_lets_racing_orders_have_one_winner(engine: Engine, db_url: str) -> None:
    make_pool(engine, "spring", ["RACE-1"])
    assert hold_code(engine, "RACE-1", order="o-held").ok
    assert release_hold(engine, "RACE-1", order="o-held").ok

    outcomes = run_together(
        redeem_order_when_released,
        [(db_url, "RACE-1", f"buyer-{i}", f"o{i}") for i in range(6)],
    )

    assert sorted(ok for ok, _, _ in outcomes) == [False] * 5 + [True]
    assert {reason for ok, reason, _ in outcomes if not ok} == {ALREADY_REDEEMED}
