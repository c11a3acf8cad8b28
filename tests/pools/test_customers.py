"""Customer history: issuances of every kind, own redemptions, and referrals."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, insert, select

from promomail.pools.after_sending.redemption import redeem
from promomail.pools.history.customers import customer_history
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import write_transaction
from promomail.pools.store.models import Code, Issuance
from tests.support.store_helpers import make_pool


def test_referral_is_attributed_to_the_advocate(engine: Engine) -> None:
    make_pool(engine, "referral", ["REF-1", "REF-2"])
    code = claim(engine, "referral", "invite-1", ["advocate"])["advocate"]

    result = redeem(engine, code, customer="friend-1", order="order-9")

    assert result.ok
    assert (result.issued_to, result.redeemed_by) == ("advocate", "friend-1")
    history = customer_history(engine, "advocate")
    assert [(i.pool, i.code, i.kind, i.mailing) for i in history.issuances] == [
        ("referral", code, "initial", "invite-1")
    ]
    assert history.issuances[0].redeemed_by == ("friend-1",)
    [referral] = history.redemptions
    assert referral.referral
    assert referral.as_dict() == {
        "pool": "referral",
        "code": code,
        "issued_to": "advocate",
        "redeemed_by": "friend-1",
        "order": "order-9",
        "redeemed_at": result.redeemed_at.isoformat(timespec="seconds")
        if result.redeemed_at
        else None,
        "referral": True,
        "mailing": "invite-1",
        "rolled_back_at": None,
    }
    assert history.referrals == [referral]

    friend = customer_history(engine, "friend-1")
    assert friend.issuances == []
    [own] = friend.redemptions
    assert (own.code, own.issued_to, own.referral) == (code, "advocate", False)


def test_history_lists_every_issuance_and_redemption(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1", "SP-2", "SP-3"])
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    spring = claim(engine, "spring", "welcome", ["alice", "bob"])
    claim(engine, "summer", "promo", ["alice", "bob"])
    with engine.connect() as conn:
        spring_id = conn.execute(select(Code.id).where(Code.code == spring["alice"])).scalar_one()
    with write_transaction(engine) as conn:  # what last_promocode records
        conn.execute(
            insert(Issuance).values(
                pool_id="spring",
                code_id=spring_id,
                customer_id="alice",
                mailing_id="reminder",
                kind="reissue",
                slot=0,
                exclusive=False,
                issued_at=utcnow(),
            )
        )
    redeem(engine, spring["alice"], customer="alice", order="a-1")
    redeem(engine, "SUMMER20", customer="bob", order="b-1")  # someone else's use of a shared code
    redeem(engine, "SUMMER20", customer="alice", order="a-2")
    redeem(engine, spring["bob"], customer="bob")

    history = customer_history(engine, "alice")

    assert history.known
    assert [(i.pool, i.code, i.kind, i.mailing, i.redeemed) for i in history.issuances] == [
        ("spring", spring["alice"], "initial", "welcome", True),
        ("summer", "SUMMER20", "initial", "promo", True),
        ("spring", spring["alice"], "reissue", "reminder", True),
    ]
    assert [(r.code, r.redeemed_by, r.order, r.referral) for r in history.redemptions] == [
        (spring["alice"], "alice", "a-1", False),
        ("SUMMER20", "alice", "a-2", False),
    ]
    times = [i.issued_at for i in history.issuances]
    assert times == sorted(times) and utcnow() - times[0] < timedelta(minutes=5)
    document = history.as_dict()
    assert document["customer"] == "alice"
    assert [i["kind"] for i in document["issuances"]] == ["initial", "initial", "reissue"]
    assert document["issuances"][0]["redeemed_by"] == ["alice"]


def test_unknown_customer_has_empty_history(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    claim(engine, "spring", "welcome", ["alice"])

    history = customer_history(engine, "nobody")

    assert not history.known
    assert history.as_dict() == {"customer": "nobody", "issuances": [], "redemptions": []}
