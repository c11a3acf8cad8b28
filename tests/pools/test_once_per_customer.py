"""``--once-per-customer``: a shared code each customer redeems once, whatever races."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

import promomail.pools.after_sending.redemption
from promomail.pools.admin.lifecycle import PoolSettings, create_pool, edit_pool, show_pool
from promomail.pools.after_sending.redemption import (
    ALREADY_REDEEMED_BY_CUSTOMER,
    NEEDS_CUSTOMER,
    redeem,
)
from promomail.pools.after_sending.rollback import unredeem
from promomail.pools.errors import InvalidPoolSetting, PoolError, StoreConflict
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.clock import utcnow
from tests.support.racing import redeem_order_when_released, run_together
from tests.support.render_helpers import full_snapshot
from tests.support.store_helpers import make_pool


def test_only_multi_use_pools_are_once_per_customer(engine: Engine) -> None:
    with pytest.raises(InvalidPoolSetting, match="applies only to") as caught:
        PoolSettings(name="p", once_per_customer=True)
    assert caught.value.settings == ("once_per_customer", "multi_use")
    view = create_pool(
        engine,
        PoolSettings(name="Summer", description="d", multi_use=True, once_per_customer=True),
        activate=True,
    )
    assert view.settings.mode == "multi-use, once per customer"
    assert view.as_dict()["once_per_customer"] is True
    # A mode setting: fixed once active, and never on a single-use pool.
    with pytest.raises(PoolError, match="once_per_customer"):
        edit_pool(engine, "summer", once_per_customer=False)
    create_pool(engine, PoolSettings(name="Draft", multi_use=True, once_per_customer=True))
    with pytest.raises(PoolError, match="applies only to"):
        edit_pool(engine, "draft", multi_use=False)
    assert show_pool(engine, "draft").settings.once_per_customer


def test_each_customer_redeems_the_shared_code_once(engine: Engine) -> None:
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True, once_per_customer=True)
    claim(engine, "summer", "m1", ["alice", "bob"])

    first = redeem(engine, "SUMMER20", customer="alice", order="o1")
    assert first.ok and first.issued_to == "alice" and first.mailing == "m1"

    before = full_snapshot(engine)
    for customer, order, reason in (
        ("alice", "o2", ALREADY_REDEEMED_BY_CUSTOMER),
        (None, "o3", NEEDS_CUSTOMER),
        (None, None, NEEDS_CUSTOMER),
    ):
        for dry_run in (True, False):
            refused = redeem(engine, "SUMMER20", customer=customer, order=order, dry_run=dry_run)
            assert refused.as_dict() == {"ok": False, "reason": reason}, (customer, order)
    # The same order again replays, as everywhere.
    replay = redeem(engine, "SUMMER20", customer="alice", order="o1")
    assert replay.as_dict() == {**first.as_dict(), "replayed": True}
    assert full_snapshot(engine) == before

    # Other customers, also ones the code was never sent to, redeem it once each.
    assert redeem(engine, "SUMMER20", customer="bob", order="o4").ok
    assert redeem(engine, "SUMMER20", customer="carol", order="o5").issued_to is None
    assert redeem(engine, "SUMMER20", customer="carol", order="o6").reason == (
        ALREADY_REDEEMED_BY_CUSTOMER
    )
    assert show_pool(engine, "summer").counts.redemptions == 3


def test_a_rolled_back_redemption_lets_the_customer_redeem_again(engine: Engine) -> None:
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True, once_per_customer=True)
    assert redeem(engine, "SUMMER20", customer="alice", order="o1").ok
    unredeem(engine, "SUMMER20", order="o1")
    again = redeem(engine, "SUMMER20", customer="alice", order="o2")
    assert again.ok and again.redemptions == 1


def test_a_plain_multi_use_pool_counts_every_redemption_of_a_customer(engine: Engine) -> None:
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    for order in ("o1", "o2", None):
        assert redeem(engine, "SUMMER20", customer="alice", order=order).ok
    assert redeem(engine, "SUMMER20", order="o3").ok  # no customer needed


def test_the_database_keeps_a_customer_to_one_live_redemption(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True, once_per_customer=True)
    assert redeem(engine, "SUMMER20", customer="alice", order="o1").ok
    insert = (
        "INSERT INTO redemptions (pool_id, code_id, redeemed_by, order_id, redeemed_at, "
        "exclusive, once_per_customer) SELECT pool_id, id, 'alice', :order, :now, false, true "
        "FROM codes WHERE code = 'SUMMER20'"
    )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text(insert), {"order": "o2", "now": utcnow()})

    # A redeemer that missed the first redemption in its look-up loses at its
    # insert, and its count goes with it.
    monkeypatch.setattr(
        promomail.pools.after_sending.redemption,
        "_customer_refusal",
        lambda customer, redeemed_before: None,
    )
    before = full_snapshot(engine)
    with pytest.raises(StoreConflict):
        redeem(engine, "SUMMER20", customer="alice", order="o2")
    assert full_snapshot(engine) == before


def test_twelve_orders_of_one_customer_at_once_redeem_once(engine: Engine, db_url: str) -> None:
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True, once_per_customer=True)
    claim(engine, "summer", "m1", ["alice"])

    outcomes = run_together(
        redeem_order_when_released,
        [(db_url, "SUMMER20", "alice", f"o{i}") for i in range(12)],
    )

    assert sorted(outcomes, key=str) == sorted(
        [(True, None, False)] + [(False, ALREADY_REDEEMED_BY_CUSTOMER, False)] * 11, key=str
    )
    with engine.connect() as conn:
        live = conn.execute(
            text(
                "SELECT redeemed_by, count(*) FROM redemptions WHERE rolled_back_at IS NULL "
                "GROUP BY redeemed_by"
            )
        ).all()
    assert [tuple(r) for r in live] == [("alice", 1)]
    assert show_pool(engine, "summer").counts.redemptions == 1
