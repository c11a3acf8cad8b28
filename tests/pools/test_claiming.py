"""Issuing codes: claims, reservations, reclaiming, and the invariants under real concurrency.

Every test runs on SQLite and on PostgreSQL. The concurrency tests race real
spawned processes (see ``racing.py``), each with its own engine.
"""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from promomail.pools.admin.lifecycle import archive_pool, show_pool
from promomail.pools.after_sending.redemption import redeem
from promomail.pools.choices import CodeState, FileFormat
from promomail.pools.codes.counts import PoolCounts, held_now
from promomail.pools.codes.generation import CodeSpec, generate_codes
from promomail.pools.codes.imports import Upload, import_history, upload_codes
from promomail.pools.codes.listing import list_codes
from promomail.pools.codes.voiding import void_batch
from promomail.pools.errors import PoolError, PoolExhausted, ReservationLost, StoreConflict
from promomail.pools.issuing.claiming import (
    Reservation,
    claim,
    reclaim_expired,
    reclaim_scope,
    release,
    reserve,
    reserve_many,
    settle,
)
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import is_postgres, read_transaction, write_transaction
from promomail.pools.store.models import Code, Issuance
from tests.support.invariants import check_invariants, check_no_reservations
from tests.support.racing import run_together
from tests.support.render_helpers import wait_until
from tests.support.store_helpers import make_pool, snapshot

IssuanceRow = tuple[str, str, str, str, str, bool]


def issuances(engine: Engine, pool_id: str | None = None) -> list[IssuanceRow]:
    """(mailing, customer, pool, code, kind, exclusive) in the order they were recorded."""
    query = (
        select(
            Issuance.mailing_id,
            Issuance.customer_id,
            Issuance.pool_id,
            Code.code,
            Issuance.kind,
            Issuance.exclusive,
        )
        .join(Code, Code.id == Issuance.code_id)
        .order_by(Issuance.id)
    )
    if pool_id is not None:
        query = query.where(Issuance.pool_id == pool_id)
    with read_transaction(engine) as conn:
        return [(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in conn.execute(query)]


def statuses(engine: Engine, pool_id: str) -> dict[str, str]:
    """code → stored status, ``reserved`` for a code an open reservation holds."""
    with read_transaction(engine) as conn:
        rows = conn.execute(
            select(Code.code, Code.status, held_now()).where(Code.pool_id == pool_id)
        )
        return {code: "reserved" if held else status for code, status, held in rows}


def counts(engine: Engine, pool_id: str) -> PoolCounts:
    result = show_pool(engine, pool_id).counts
    assert result.total == (
        result.available
        + result.pending
        + result.reserved
        + result.issued
        + result.expired
        + result.void
    ), result
    return result


def codes_of(reservation: Reservation) -> list[str]:
    return [c.code for c in reservation.codes]


# --------------------------------------------------------------------------
# claim


def test_claim_gives_each_customer_a_code_once_per_mailing(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2", "A3", "A4", "A5"])
    first = claim(engine, "spring", "m1", ["alice", "bob"])
    assert first == {"alice": "A1", "bob": "A2"}
    # The same mailing again (a retry): the same codes, nothing consumed.
    assert claim(engine, "spring", "m1", ["bob", "alice"]) == {"bob": "A2", "alice": "A1"}
    assert claim(engine, "spring", "m1", ["alice"]) == {"alice": "A1"}
    # A batch mixing known and new customers only consumes for the new ones.
    assert claim(engine, "spring", "m1", ["carol", "alice", "dave"]) == {
        "carol": "A3",
        "alice": "A1",
        "dave": "A4",
    }
    # Another mailing is another initial code.
    assert claim(engine, "spring", "m2", ["alice"]) == {"alice": "A5"}
    assert [(m, c, code) for m, c, _, code, _, _ in issuances(engine)] == [
        ("m1", "alice", "A1"),
        ("m1", "bob", "A2"),
        ("m1", "carol", "A3"),
        ("m1", "dave", "A4"),
        ("m2", "alice", "A5"),
    ]
    assert all(kind == "initial" and exclusive for *_, kind, exclusive in issuances(engine))
    assert counts(engine, "spring") == PoolCounts(total=5, issued=5)


def test_claim_handles_repeated_customers_in_one_call(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2", "A3"])
    assert claim(engine, "spring", "m1", ["bob", "alice", "bob", "alice"]) == {
        "bob": "A1",
        "alice": "A2",
    }
    assert len(issuances(engine)) == 2
    assert claim(engine, "spring", "m1", []) == {}


def test_claim_in_large_batches(engine: Engine) -> None:
    make_pool(engine, "spring")
    generate_codes(engine, "spring", 2_500, CodeSpec())
    customers = [f"c{i:05d}" for i in range(2_400)]
    given: dict[str, str] = {}
    for start in range(0, len(customers), 1_000):
        given.update(claim(engine, "spring", "m1", customers[start : start + 1_000]))
    assert len(given) == 2_400
    assert len(set(given.values())) == 2_400
    assert claim(engine, "spring", "m1", customers) == given
    assert counts(engine, "spring") == PoolCounts(total=2_500, available=100, issued=2_400)


def test_soonest_expiring_first_then_oldest_import(engine: Engine) -> None:
    now = utcnow()

    def at(delta: timedelta) -> str:
        return (now + delta).isoformat(timespec="seconds")

    make_pool(engine, "spring", ["OLD1", "OLD2"])
    later = (
        "code,issue_start,issue_end,available_till\n"
        "LATE,,,\n"
        f"SOON,,{at(timedelta(days=2))},\n"
        f"SOONER,,,{at(timedelta(days=1))}\n"
        f"PENDING,{at(timedelta(hours=1))},,\n"
        f"EXPIRED,,{at(-timedelta(days=1))},\n"
        f"GONE,,,{at(-timedelta(minutes=1))}\n"
        f"STARTED,{at(-timedelta(hours=1))},{at(timedelta(days=3))},\n"
    )
    upload = Upload("later.csv", FileFormat.CSV, stream=io.BytesIO(later.encode()))
    upload_codes(engine, "spring", [upload])
    customers = [f"c{i}" for i in range(6)]
    given = claim(engine, "spring", "m1", customers)
    assert [given[c] for c in customers] == ["SOONER", "SOON", "STARTED", "OLD1", "OLD2", "LATE"]
    # The pending and expired codes are never handed out.
    with pytest.raises(PoolExhausted) as exhausted:
        claim(engine, "spring", "m1", ["c6"])
    assert (exhausted.value.needed, exhausted.value.available) == (1, 0)
    assert counts(engine, "spring") == PoolCounts(total=9, pending=1, issued=6, expired=2)
    assert statuses(engine, "spring")["PENDING"] == "available"


def test_exhausted_pool_changes_nothing(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2", "A3"])
    claim(engine, "spring", "m1", ["alice"])
    before = snapshot(engine)
    with pytest.raises(PoolExhausted, match=r"'spring'.*needed 4, available 2") as exhausted:
        claim(engine, "spring", "m1", ["alice", "bob", "carol", "dave", "erin"])
    assert (exhausted.value.pool_id, exhausted.value.needed) == ("spring", 4)
    assert snapshot(engine) == before


def test_partial_claim_serves_customers_in_order(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2", "A3"])
    claim(engine, "spring", "m1", ["alice"])
    given = claim(engine, "spring", "m1", ["bob", "alice", "carol", "dave"], partial=True)
    assert given == {"bob": "A2", "alice": "A1", "carol": "A3"}
    assert claim(engine, "spring", "m1", ["erin"], partial=True) == {}
    assert counts(engine, "spring") == PoolCounts(total=3, issued=3)


@pytest.mark.parametrize("status", ["draft", "archived"])
def test_only_active_pools_issue(engine: Engine, status: str) -> None:
    make_pool(engine, "spring", ["A1", "A2"], activate=status == "archived")
    if status == "archived":
        archive_pool(engine, "spring")
    before = snapshot(engine)
    with pytest.raises(PoolError, match=f"'spring' is {status}, not active"):
        claim(engine, "spring", "m1", ["alice"])
    with pytest.raises(PoolError, match=f"is {status}"):
        reserve(engine, "spring", 1, scope="m1")
    assert snapshot(engine) == before


def test_unknown_pool(engine: Engine) -> None:
    with pytest.raises(PoolError, match="'nope' does not exist"):
        claim(engine, "nope", "m1", ["alice"])


def test_multi_use_pool_shares_its_code_and_never_consumes_it(engine: Engine) -> None:
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    given = claim(engine, "summer", "m1", ["alice", "bob", "carol"])
    assert given == {"alice": "SUMMER20", "bob": "SUMMER20", "carol": "SUMMER20"}
    assert claim(engine, "summer", "m1", ["alice", "dave"]) == {
        "alice": "SUMMER20",
        "dave": "SUMMER20",
    }
    assert claim(engine, "summer", "m2", ["alice"]) == {"alice": "SUMMER20"}
    rows = issuances(engine)
    assert [(m, c) for m, c, *_ in rows] == [
        ("m1", "alice"),
        ("m1", "bob"),
        ("m1", "carol"),
        ("m1", "dave"),
        ("m2", "alice"),
    ]
    assert {(code, kind, exclusive) for *_, code, kind, exclusive in rows} == {
        ("SUMMER20", "initial", False)
    }
    assert counts(engine, "summer") == PoolCounts(total=1, available=1)
    assert statuses(engine, "summer") == {"SUMMER20": "available"}


def test_multi_use_pool_without_a_usable_code(engine: Engine) -> None:
    past = (utcnow() - timedelta(days=1)).isoformat(timespec="seconds")
    make_pool(engine, "summer", csv_text=f"code,issue_end\nSUMMER19,{past}\n", multi_use=True)
    with pytest.raises(PoolExhausted) as exhausted:
        claim(engine, "summer", "m1", ["alice"])
    # The way out of a shared pool is its one code, not thousands of them.
    assert "upload its shared code (codes upload summer FILE)" in str(exhausted.value)
    assert claim(engine, "summer", "m1", ["alice"], partial=True) == {}
    assert issuances(engine) == []


# --------------------------------------------------------------------------
# the database enforces invariants 1 and 2 by itself


def _insert_issuance(engine: Engine, **values: Any) -> None:
    row = {
        "pool_id": "spring",
        "mailing_id": "m9",
        "customer_id": "mallory",
        "kind": "initial",
        "slot": 0,
        "exclusive": True,
        "issued_at": utcnow(),
        **values,
    }
    with write_transaction(engine) as conn:
        conn.execute(insert(Issuance).values(**row))


def _code_id(engine: Engine, code: str) -> int:
    with read_transaction(engine) as conn:
        return int(conn.execute(select(Code.id).where(Code.code == code)).scalar_one())


def test_database_rejects_a_second_initial_issuance_of_a_single_use_code(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2"])
    claim(engine, "spring", "m1", ["alice"])
    a1 = _code_id(engine, "A1")
    before = snapshot(engine)
    with pytest.raises(StoreConflict):
        _insert_issuance(engine, code_id=a1, customer_id="mallory", mailing_id="m2")
    with pytest.raises(StoreConflict):
        _insert_issuance(engine, code_id=a1, customer_id="alice", mailing_id="m3")
    assert snapshot(engine) == before
    # Showing the code again (a reissue) is a different record and allowed.
    _insert_issuance(engine, code_id=a1, customer_id="alice", mailing_id="m2", kind="reissue")


def test_database_rejects_two_initial_codes_for_one_customer_in_a_mailing(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2", "A3"])
    claim(engine, "spring", "m1", ["alice"])
    a2 = _code_id(engine, "A2")
    before = snapshot(engine)
    with pytest.raises(StoreConflict):
        _insert_issuance(engine, code_id=a2, customer_id="alice", mailing_id="m1")
    assert snapshot(engine) == before
    # Another mailing, or another slot (per-customer pools), is allowed.
    _insert_issuance(engine, code_id=a2, customer_id="alice", mailing_id="m2")
    _insert_issuance(
        engine, code_id=_code_id(engine, "A3"), customer_id="alice", mailing_id="m1", slot=1
    )


def test_database_allows_a_shared_code_for_everyone(engine: Engine) -> None:
    make_pool(engine, "spring", ["SHARED"])
    shared = _code_id(engine, "SHARED")
    for customer in ("alice", "bob"):
        _insert_issuance(engine, code_id=shared, customer_id=customer, exclusive=False)
    assert len(issuances(engine)) == 2


# --------------------------------------------------------------------------
# reserve / settle / release


def test_reserve_then_settle_issues_what_was_handed_out(engine: Engine) -> None:
    make_pool(engine, "spring", [f"A{i}" for i in range(1, 9)])
    reservation = reserve(engine, "spring", 5, scope="m1")
    assert codes_of(reservation) == ["A1", "A2", "A3", "A4", "A5"]
    assert counts(engine, "spring") == PoolCounts(total=8, available=3, reserved=5)
    # Another chunk reserving meanwhile gets other codes.
    other = reserve(engine, "spring", 5, scope="m1")
    assert codes_of(other) == ["A6", "A7", "A8"]

    alice = reservation.take()
    bob = reservation.take()
    carol = reservation.take()
    assert alice is not None and bob is not None and carol is not None
    reservation.give_back(carol)  # carol's message failed to render
    handed = {"spring": [alice.to("alice"), bob.to("bob")]}
    settle(engine, "m1", [reservation], handed)

    assert [(m, c, code) for m, c, _, code, _, _ in issuances(engine)] == [
        ("m1", "alice", "A1"),
        ("m1", "bob", "A2"),
    ]
    assert counts(engine, "spring") == PoolCounts(total=8, available=3, reserved=3, issued=2)
    release(engine, [other])
    assert counts(engine, "spring") == PoolCounts(total=8, available=6, issued=2)
    # The claim path sees the same record.
    assert claim(engine, "spring", "m1", ["alice", "dave"]) == {"alice": "A1", "dave": "A3"}


def test_reserve_takes_what_is_left(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2"])
    assert codes_of(reserve(engine, "spring", 10, scope="m1")) == ["A1", "A2"]
    empty = reserve(engine, "spring", 10, scope="m1")
    assert empty.codes == []
    assert empty.take() is None


def test_reserve_many_pools_at_once(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2", "A3"])
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    held = reserve_many(engine, {"spring": 2, "summer": 2}, scope="m1")
    assert codes_of(held["spring"]) == ["A1", "A2"]
    summer = held["summer"]
    assert not summer.exclusive
    first, second = summer.take(), summer.take()
    assert first is not None and first == second and first.code == "SUMMER20"
    spring_code = held["spring"].take()
    assert spring_code is not None
    settle(
        engine,
        "m1",
        list(held.values()),
        {
            "spring": [spring_code.to("alice")],
            "summer": [first.to("alice"), first.to("bob")],
        },
    )
    assert sorted((c, p, code, ex) for _, c, p, code, _, ex in issuances(engine)) == [
        ("alice", "spring", "A1", True),
        ("alice", "summer", "SUMMER20", False),
        ("bob", "summer", "SUMMER20", False),
    ]
    assert counts(engine, "spring") == PoolCounts(total=3, available=2, issued=1)
    assert counts(engine, "summer") == PoolCounts(total=1, available=1)


def test_settle_after_void_raises_and_changes_nothing(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2", "A3"])
    make_pool(engine, "summer", ["S1", "S2"])
    spring = reserve(engine, "spring", 2, scope="m1")
    summer = reserve(engine, "summer", 2, scope="m1")
    (batch,) = import_history(engine, "summer")
    void_batch(engine, "summer", batch.batch)  # the upload was wrong: withdraw it
    before = snapshot(engine)
    a1, s1 = spring.take(), summer.take()
    assert a1 is not None and s1 is not None
    with pytest.raises(ReservationLost, match="'summer'"):
        settle(
            engine,
            "m1",
            [spring, summer],
            {"spring": [a1.to("alice")], "summer": [s1.to("alice")]},
        )
    assert snapshot(engine) == before
    assert issuances(engine) == []
    assert statuses(engine, "summer") == {"S1": "void", "S2": "void"}
    assert statuses(engine, "spring") == {"A1": "reserved", "A2": "reserved", "A3": "available"}
    release(engine, [spring, summer])
    assert counts(engine, "spring") == PoolCounts(total=3, available=3)
    assert counts(engine, "summer") == PoolCounts(total=2, void=2)


def test_settle_after_reclaim_raises_and_changes_nothing(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2", "A3"])
    stale = reserve(engine, "spring", 2, scope="m1")
    # The process holding it is taken for dead; the next run of m1 reclaims.
    assert reclaim_scope(engine, "m1") == 2
    assert counts(engine, "spring") == PoolCounts(total=3, available=3)
    fresh = reserve(engine, "spring", 2, scope="m1")
    assert codes_of(fresh) == codes_of(stale)  # the same codes, under a new token
    before = snapshot(engine)
    code = stale.take()
    assert code is not None
    with pytest.raises(ReservationLost):
        settle(engine, "m1", [stale], {"spring": [code.to("alice")]})
    # An unused stale reservation cannot put codes back either.
    with pytest.raises(ReservationLost):
        settle(engine, "m1", [stale], {})
    assert snapshot(engine) == before
    fresh_code = fresh.take()
    assert fresh_code is not None
    settle(engine, "m1", [fresh], {"spring": [fresh_code.to("bob")]})
    assert [(c, code) for _, c, _, code, _, _ in issuances(engine)] == [("bob", "A1")]
    assert counts(engine, "spring") == PoolCounts(total=3, available=2, issued=1)


def test_settle_after_redemption_of_a_reserved_code_raises(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2"])
    held = reserve(engine, "spring", 2, scope="m1")
    # A checkout redeems a code a render holds (its pool does not require issue).
    assert redeem(engine, "A1").ok
    before = snapshot(engine)
    a1, a2 = held.take(), held.take()
    assert a1 is not None and a2 is not None
    with pytest.raises(ReservationLost):
        settle(engine, "m1", [held], {"spring": [a1.to("alice"), a2.to("bob")]})
    assert snapshot(engine) == before
    release(engine, [held])
    assert issuances(engine) == []
    assert counts(engine, "spring") == PoolCounts(
        total=2, available=1, issued=1, redeemed=1, redemptions=1
    )


def test_settled_codes_are_issued_and_no_longer_reserved(engine: Engine) -> None:
    """A code stays marked with its reservation's token after settle: it must read as issued."""
    make_pool(engine, "spring", ["A1", "A2", "A3"])
    held = reserve(engine, "spring", 2, scope="m1")
    assert counts(engine, "spring") == PoolCounts(total=3, available=1, reserved=2)
    assert [e.state for e in list_codes(engine, "spring")] == ["reserved", "reserved", "available"]
    code = held.take()
    assert code is not None
    settle(engine, "m1", [held], {"spring": [code.to("alice")]})
    assert counts(engine, "spring") == PoolCounts(total=3, available=2, issued=1)
    assert [e.state for e in list_codes(engine, "spring", state=CodeState.ISSUED)] == ["issued"]
    assert list_codes(engine, "spring", state=CodeState.RESERVED) == []
    # Nothing that frees reservations touches it any more.
    assert reclaim_scope(engine, "m1") == 0
    assert reclaim_expired(engine, now=utcnow() + timedelta(days=1)) == 0
    release(engine, [held])
    (batch,) = import_history(engine, "spring")
    report = void_batch(engine, "spring", batch.batch)
    assert (report.voided, report.kept_issued) == (2, 1)
    assert statuses(engine, "spring") == {"A1": "issued", "A2": "void", "A3": "void"}


def test_void_of_a_batch_voids_the_codes_of_every_open_reservation(engine: Engine) -> None:
    make_pool(engine, "spring", [f"A{i}" for i in range(6)])
    first = reserve(engine, "spring", 2, scope="m1")
    second = reserve_many(engine, {"spring": 1}, scope="m2")["spring"]
    reserve_many(engine, {"spring": 1}, scope="m2", token=second.token)  # a top-up
    (batch,) = import_history(engine, "spring")
    assert void_batch(engine, "spring", batch.batch).voided == 6
    assert counts(engine, "spring") == PoolCounts(total=6, void=6)
    for held in (first, second):
        code = held.take()
        assert code is not None
        with pytest.raises(ReservationLost):
            settle(engine, "m1", [held], {"spring": [code.to("alice")]})
    release(engine, [first, second])
    assert counts(engine, "spring") == PoolCounts(total=6, void=6)


def test_reclaim_scope_frees_only_that_scope(engine: Engine) -> None:
    make_pool(engine, "spring", [f"A{i}" for i in range(6)])
    reserve(engine, "spring", 2, scope="m1")
    reserve(engine, "spring", 1, scope="m1")
    kept = reserve(engine, "spring", 2, scope="m1/shard-2")
    assert reclaim_scope(engine, "m1") == 3
    assert reclaim_scope(engine, "m1") == 0
    assert counts(engine, "spring") == PoolCounts(total=6, available=4, reserved=2)
    kept_code = kept.take()
    assert kept_code is not None
    settle(engine, "m1", [kept], {"spring": [kept_code.to("alice")]})
    assert counts(engine, "spring") == PoolCounts(total=6, available=5, issued=1)


def test_reclaim_expired_frees_reservations_past_their_expiry(engine: Engine) -> None:
    make_pool(engine, "spring", [f"A{i}" for i in range(5)])
    short = reserve(engine, "spring", 2, scope="m1", ttl=timedelta(minutes=1))
    reserve(engine, "spring", 2, scope="m2", ttl=timedelta(hours=1))
    assert reclaim_expired(engine) == 0
    assert reclaim_expired(engine, now=utcnow() + timedelta(minutes=2)) == 2
    assert counts(engine, "spring") == PoolCounts(total=5, available=3, reserved=2)
    code = short.take()
    assert code is not None
    with pytest.raises(ReservationLost):
        settle(engine, "m1", [short], {"spring": [code.to("alice")]})
    assert reclaim_expired(engine, now=utcnow() + timedelta(hours=2)) == 2
    assert counts(engine, "spring") == PoolCounts(total=5, available=5)
    assert issuances(engine) == []


def test_release_puts_everything_back(engine: Engine) -> None:
    make_pool(engine, "spring", ["A1", "A2", "A3"])
    held = reserve(engine, "spring", 3, scope="m1")
    held.take()
    release(engine, [held])
    release(engine, [held])  # harmless twice
    assert counts(engine, "spring") == PoolCounts(total=3, available=3)
    assert issuances(engine) == []


# --------------------------------------------------------------------------
# concurrency: real processes, one pool


def _race(
    barrier: Any,
    url: str,
    pool_id: str,
    mailing_id: str,
    worker: int,
    shared: list[str],
    batch: int,
) -> tuple[dict[str, str], dict[str, str]]:
    """Claim for customers every worker also claims, then drain the pool in batches.

    Returns (shared customer → code, own customer → code).
    """
    from promomail.pools.codes.counts import available_count
    from promomail.pools.errors import PoolExhausted
    from promomail.pools.issuing.claiming import claim
    from promomail.pools.store.db import StoreConfig, open_engine, read_transaction

    engine = open_engine(StoreConfig(url), migrate=False)
    own: dict[str, str] = {}
    try:
        barrier.wait()
        common = claim(engine, pool_id, mailing_id, shared)
        serial = 0
        while True:
            customers = [f"w{worker}-c{serial + i:05d}" for i in range(batch)]
            serial += batch
            try:
                own.update(claim(engine, pool_id, mailing_id, customers))
                continue
            except PoolExhausted:
                answer = claim(engine, pool_id, mailing_id, customers, partial=True)
                own.update(answer)
            if not answer:
                # Codes locked by a transaction that then rolled back are
                # available again: stop only when none is left at all.
                with read_transaction(engine) as conn:
                    if available_count(conn, pool_id) == 0:
                        return common, own
    finally:
        engine.dispose()


def test_concurrent_claims_never_issue_a_code_twice(db_url: str, engine: Engine) -> None:
    """Invariants 1 and 2 with four processes claiming from one pool at once.

    All four first claim for the same 100 customers of the mailing (each in
    its own order), then drain the pool in batches of different sizes.
    """
    size = 3_000
    make_pool(engine, "spring")
    generate_codes(engine, "spring", size, CodeSpec())
    shared = [f"s{i:03d}" for i in range(100)]
    orders = [shared, shared[::-1], shared[50:] + shared[:50], shared]
    batches = [100, 37, 250, 9]
    results: list[tuple[dict[str, str], dict[str, str]]] = run_together(
        _race,
        [
            (db_url, "spring", "m1", worker, order, batch)
            for worker, (order, batch) in enumerate(zip(orders, batches, strict=True))
        ],
    )

    # The same customers got the same codes, whichever process asked.
    commons = [common for common, _ in results]
    assert all(common == commons[0] for common in commons)
    assert sorted(commons[0]) == shared
    owns = [own for _, own in results]
    if engine.dialect.name == "postgresql":
        # Row locks let the workers claim side by side. (SQLite serialises
        # writers and its busy handler sleeps, so one worker may well drain
        # the pool alone; the checks below hold either way.)
        assert sum(1 for own in owns if own) >= 2
    given = dict(commons[0])
    for own in owns:
        given.update(own)
    assert len(given) == len(shared) + sum(len(own) for own in owns) == size
    # The customers got distinct codes.
    assert len(set(given.values())) == size

    with read_transaction(engine) as conn:
        twice = conn.execute(
            select(Issuance.code_id, func.count())
            .group_by(Issuance.code_id)
            .having(func.count() > 1)
        ).all()
        issued_ids = conn.execute(select(Issuance.code_id)).scalars().all()
        all_ids = conn.execute(select(Code.id)).scalars().all()
    # Zero codes issued twice, every code issued exactly once.
    assert twice == []
    assert sorted(issued_ids) == sorted(all_ids)
    assert {(c, code) for _, c, _, code, _, _ in issuances(engine)} == set(given.items())
    assert set(statuses(engine, "spring").values()) == {"issued"}
    assert counts(engine, "spring") == PoolCounts(total=size, issued=size)


def _settle_while_voided(barrier: Any, url: str, pools: list[str]) -> dict[str, int]:
    """Reserve from each pool, then settle each chunk whole as another process voids it."""
    from promomail.pools.errors import ReservationLost
    from promomail.pools.issuing.claiming import release, reserve, settle
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    issued: dict[str, int] = {}
    try:
        held = {pool: reserve(engine, pool, 60, scope=f"race-{pool}") for pool in pools}
        barrier.wait()
        for pool, reservation in held.items():
            handed = [code.to(f"c{i}") for i, code in enumerate(reservation.codes[:50])]
            try:
                settle(engine, "race", [reservation], {pool: handed})
                issued[pool] = len(handed)
            except ReservationLost:
                release(engine, [reservation])
                issued[pool] = 0
        return issued
    finally:
        engine.dispose()


def _void_while_settled(barrier: Any, url: str, pools: list[str]) -> dict[str, int]:
    from promomail.pools.codes.imports import import_history
    from promomail.pools.codes.voiding import void_batch
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        batches = {pool: import_history(engine, pool)[0].batch for pool in pools}
        barrier.wait()
        return {pool: void_batch(engine, pool, batch).voided for pool, batch in batches.items()}
    finally:
        engine.dispose()


def _race_settle_and_void(barrier: Any, url: str, role: str, pools: list[str]) -> dict[str, int]:
    racer = _settle_while_voided if role == "settle" else _void_while_settled
    return racer(barrier, url, pools)


def test_settle_racing_a_void_either_issues_or_voids(db_url: str, engine: Engine) -> None:
    """A void and a settle of the same reserved codes at once: never both, never neither."""
    pools = [f"p{i}" for i in range(4)]
    for pool in pools:
        make_pool(engine, pool, [f"{pool}-{i:03d}" for i in range(100)])
    settled, voided = run_together(
        _race_settle_and_void, [(db_url, "settle", pools), (db_url, "void", pools)]
    )
    check_invariants(engine, redemptions_possible=False)
    check_no_reservations(engine)
    for pool in pools:
        # Issued codes are kept; everything else of the batch is void.
        assert counts(engine, pool) == PoolCounts(
            total=100, issued=settled[pool], void=100 - settled[pool]
        ), pool
        assert voided[pool] == 100 - settled[pool], pool


def test_a_code_handed_out_twice_in_one_chunk_loses_the_reservation(engine: Engine) -> None:
    # What a top-up gets when its reservation was reclaimed meanwhile: the
    # freed code again, under the same token. The settle must not half-apply.
    make_pool(engine, "spring", ["A1", "A2"])
    held = reserve(engine, "spring", 1, scope="m1|all")
    before = snapshot(engine)
    twice = {"spring": [held.codes[0].to("alice"), held.codes[0].to("bob")]}
    with pytest.raises(ReservationLost, match="reserved again"):
        settle(engine, "m1", [held], twice)
    assert snapshot(engine) == before


def _waiting_on_locks(engine: Engine) -> int:
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        return int(conn.exec_driver_sql(query).scalar_one())


def test_void_and_reclaim_of_one_scope_wait_for_each_other_without_deadlock(
    engine: Engine,
) -> None:
    if not is_postgres(engine):
        pytest.skip("SQLite has one writer at a time: nothing to order")
    make_pool(engine, "spring", ["A1", "A2", "A3", "A4"])
    # Stored in the order b, a: a plan's order differs from the tokens' order.
    reserve_many(engine, {"spring": 1}, scope="S", token="b" * 32)
    reserve_many(engine, {"spring": 1}, scope="S", token="a" * 32)
    (batch,) = [record.batch for record in import_history(engine, "spring")]
    outcomes: dict[str, object] = {}

    def run(name: str, call: Any) -> threading.Thread:
        def target() -> None:
            try:
                outcomes[name] = call()
            except Exception as exc:  # the test reports it below
                outcomes[name] = exc

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    with engine.connect() as blocker:
        blocker.exec_driver_sql("SELECT 1 FROM held_codes WHERE token = %s FOR UPDATE", ("a" * 32,))
        voiding = run("void", lambda: void_batch(engine, "spring", batch))
        wait_until(lambda: _waiting_on_locks(engine) >= 1, what="the void to wait on the blocker")
        reclaiming = run("reclaim", lambda: reclaim_scope(engine, "S"))
        wait_until(lambda: _waiting_on_locks(engine) >= 2, what="the reclaim to wait too")
        blocker.rollback()
    voiding.join(60)
    reclaiming.join(60)
    assert not any(isinstance(o, Exception) for o in outcomes.values()), outcomes
    check_invariants(engine)
