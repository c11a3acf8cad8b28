"""Reminder segments: who still holds a usable code, and whose code expires soon.

A hand-built history walks every case a campaign meets (issued, redeemed by
the customer or by a friend, rolled back, returned and given to someone
else, expired, expiring inside and outside the window, a newer code, a
multi-use code, a validity period, a voided batch, per-customer codes), and a
property test compares the segment with a plain-Python model over generated
histories. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

from promomail.pools.after_sending.redemption import redeem
from promomail.pools.after_sending.returns import return_codes
from promomail.pools.after_sending.rollback import unredeem
from promomail.pools.choices import FileFormat
from promomail.pools.codes.imports import Upload, upload_codes
from promomail.pools.codes.voiding import void_batch
from promomail.pools.errors import PoolNotFound, SegmentError
from promomail.pools.history.pages import segment_page
from promomail.pools.history.reminders import MAX_EXPIRING_WITHIN, parse_expiring_within
from promomail.pools.history.segments import SegmentFilters, prepare_segment, segment
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Code, ImportBatch, Issuance
from tests.support.render_helpers import render, write_recipients, write_template
from tests.support.store_helpers import make_pool

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def _at(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _backdate(engine: Engine, when: datetime, mailing: str, customer: str | None = None) -> None:
    """Move a mailing's issuances (one customer's) to ``when``, as if sent then."""
    query = update(Issuance).where(Issuance.mailing_id == mailing).values(issued_at=when)
    if customer is not None:
        query = query.where(Issuance.customer_id == customer)
    with engine.begin() as conn:
        conn.execute(query)


def _redeem(engine: Engine, code: str, customer: str | None, order: str, **kw: Any) -> None:
    result = redeem(engine, code, customer=customer, order=order, **kw)
    assert result.ok, result.reason


# -- a hand-built history ----------------------------------------------------------


@dataclass
class History:
    engine: Engine
    #: The moment the history was built; the segments are asked two hours later.
    built: datetime
    codes: dict[str, str] = field(default_factory=dict)

    @property
    def now(self) -> datetime:
        return self.built + 2 * HOUR

    def ids(self, *pools: str, **filters: Any) -> list[str]:
        return segment(self.engine, unredeemed_from=pools, now=self.now, **filters)


@pytest.fixture
def history(engine: Engine, tmp_path: Path, db_url: str) -> History:
    built = utcnow()
    h = History(engine, built)

    # welcome: single-use. Codes are issued soonest-expiring first, then in import order.
    make_pool(
        engine,
        "welcome",
        csv_text="code,available_till\n"
        f"W-GONE,{_at(built + HOUR)}\n"  # expired by the time the segment is asked
        f"W-SOON,{_at(built + 3 * DAY)}\n"
        f"W-LATER,{_at(built + 30 * DAY)}\n" + "".join(f"W-{i:02},\n" for i in range(1, 10)),
    )
    first = claim(
        engine,
        "welcome",
        "m1",
        ["ivy", "ann", "bob", "cat", "dan", "eve", "fay", "gus", "jon", "kim"],
    )
    assert first == {
        "ivy": "W-GONE",
        "ann": "W-SOON",
        "bob": "W-LATER",
        **{c: f"W-{i:02}" for i, c in enumerate(("cat", "dan", "eve", "fay", "gus"), 1)},
        "jon": "W-06",
        "kim": "W-07",
    }
    _backdate(engine, built - 5 * DAY, "m1")
    second = claim(engine, "welcome", "m2", ["jon", "kim"])  # newer codes for two of them
    assert second == {"jon": "W-08", "kim": "W-09"}
    _redeem(engine, "W-02", "dan", "o-dan")  # dan used his code
    _redeem(engine, "W-03", "friend", "o-eve")  # eve's code used by a friend: used all the same
    _redeem(engine, "W-04", "fay", "o-fay")
    unredeem(engine, "W-04", order="o-fay")  # refunded: fay holds her code again
    _redeem(engine, "W-08", "jon", "o-jon")  # jon used his newer code
    _redeem(engine, "W-07", "kim", "o-kim")  # kim used her older one
    assert return_codes(engine, "m1", ["gus"], reason="hard bounce").returned == 1
    assert claim(engine, "welcome", "m3", ["hal"]) == {"hal": "W-05"}  # gus's code, now hal's
    # A later upload, voided after one of its codes went out: the issued code stays.
    batch = _upload(engine, "welcome", ["V-1", "V-2"])
    assert claim(engine, "welcome", "m3", ["hal", "lou"]) == {"hal": "W-05", "lou": "V-1"}
    report = void_batch(engine, "welcome", batch)
    assert (report.voided, report.kept_issued) == (1, 1)

    # summer: one shared code for everyone, each customer may use it.
    make_pool(
        engine,
        "summer",
        csv_text=f"code,available_till\nSUMMER20,{_at(built + 5 * DAY)}\n",
        multi_use=True,
    )
    claim(engine, "summer", "m4", ["ann", "mia", "ned", "oli"])
    _redeem(engine, "SUMMER20", "mia", "o-mia")  # mia used it
    _redeem(engine, "SUMMER20", "pat", "o-pat")  # pat, never sent it, used it too
    _redeem(engine, "SUMMER20", None, "o-anon")  # and someone unknown
    _redeem(engine, "SUMMER20", "oli", "o-oli")
    unredeem(engine, "SUMMER20", order="o-oli")  # refunded

    # vip: codes valid for 10 days from their issue.
    make_pool(
        engine,
        "vip",
        csv_text=f"code,available_till\nV-B,{_at(built + 2 * DAY)}\nV-A,\nV-C,\n",
        require_issued=True,
        issued_valid_days=10,
    )
    assert claim(engine, "vip", "m5", ["sam", "qua", "rex"]) == {
        "sam": "V-B",  # until built + 2 days (the code's end comes before the validity's)
        "qua": "V-A",
        "rex": "V-C",
    }
    _backdate(engine, built - 9 * DAY, "m5", "qua")  # valid until built + 1 day
    _backdate(engine, built - 20 * DAY, "m5", "rex")  # no longer valid

    # refer: two codes per customer, handed out by a real render.
    make_pool(engine, "refer", [f"R-{i}" for i in range(1, 7)], per_customer=2)
    template = write_template(tmp_path, "{{ client.promocodes('refer')|join(',') }}")
    recipients = write_recipients(tmp_path, ["tom", "uma"])
    render(db_url, template, recipients, "m6", tmp_path / "refer.jsonl")
    given = _issued(engine, "refer")
    refer = {c: [r.code for r in given if r.customer_id == c] for c in ("tom", "uma")}
    assert [len(codes) for codes in refer.values()] == [2, 2]
    _redeem(engine, refer["tom"][-1], "friend-1", "o-tom")  # one of tom's two codes used
    _redeem(engine, refer["uma"][0], "friend-2", "o-uma-1")  # both of uma's
    _redeem(engine, refer["uma"][1], "friend-3", "o-uma-2")
    return h


@dataclass(frozen=True)
class _Row:
    customer_id: str
    code: str


def _issued(engine: Engine, pool: str) -> list[_Row]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Issuance.customer_id, Code.code)
            .join(Code, Code.id == Issuance.code_id)
            .where(Issuance.pool_id == pool, Issuance.kind == "initial")
            .order_by(Issuance.id)
        )
        return [_Row(r.customer_id, r.code) for r in rows]


def _upload(engine: Engine, pool: str, codes: Sequence[str]) -> int:
    """Upload ``codes`` as a new batch of ``pool``; its batch id."""
    data = ("\n".join(codes) + "\n").encode()
    upload_codes(engine, pool, [Upload("more.txt", FileFormat.TXT, stream=io.BytesIO(data))])
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(ImportBatch.id)
                .where(ImportBatch.pool_id == pool)
                .order_by(ImportBatch.id.desc())
                .limit(1)
            ).scalar_one()
        )


def test_who_still_holds_a_usable_single_use_code(history: History) -> None:
    # ivy: expired; dan: redeemed; eve: redeemed by a friend; gus: returned (hal has it
    # now); jon: his newer code is used. fay's redemption was refunded; kim's newer code
    # is unused; lou's code came from a batch voided after it went out.
    assert history.ids("welcome") == ["ann", "bob", "cat", "fay", "hal", "kim", "lou"]


def test_expiring_within_a_window(history: History) -> None:
    assert history.ids("welcome", expiring_within=7 * DAY) == ["ann"]
    assert history.ids("welcome", expiring_within=60 * DAY) == ["ann", "bob"]
    assert history.ids("welcome", expiring_within=2 * DAY) == []  # ann's ends in 3 days
    # From the other side: by the day before ann's code ends, everyone but her is out of a
    # one-day window, and the moment it ends she is gone from every segment.
    late = history.built + 3 * DAY
    in_a_day = segment(
        history.engine,
        unredeemed_from=["welcome"],
        expiring_within=DAY,
        now=late - 12 * HOUR,
    )
    assert in_a_day == ["ann"]
    assert "ann" not in segment(history.engine, unredeemed_from=["welcome"], now=late)


def test_multi_use_codes_count_per_customer(history: History) -> None:
    # mia used the shared code; pat and an anonymous buyer using it change nothing for
    # the others; oli's use was refunded. pat was never sent it: not a holder.
    assert history.ids("summer") == ["ann", "ned", "oli"]
    assert history.ids("summer", expiring_within=7 * DAY) == ["ann", "ned", "oli"]
    assert history.ids("summer", expiring_within=4 * DAY) == []


def test_a_validity_period_ends_a_code_like_its_own_end(history: History) -> None:
    # rex's was issued 20 days ago; qua's 9 days ago (valid one more day); sam's code
    # itself ends in two days.
    assert history.ids("vip") == ["qua", "sam"]
    assert history.ids("vip", expiring_within=36 * HOUR) == ["qua"]
    assert history.ids("vip", expiring_within=7 * DAY) == ["qua", "sam"]


def test_per_customer_pools_count_every_current_code(history: History) -> None:
    assert history.ids("refer") == ["tom"]


def test_several_pools_and_the_other_filters(history: History) -> None:
    assert history.ids("welcome", "summer") == [
        "ann", "bob", "cat", "fay", "hal", "kim", "lou", "ned", "oli",
    ]  # fmt: skip
    assert history.ids("welcome", "summer", expiring_within=7 * DAY) == ["ann", "ned", "oli"]
    # Welcome holders who were sent summer, and those who were not.
    assert history.ids("welcome", issued_from=["summer"]) == ["ann"]
    assert history.ids("welcome", issued_from=["summer"], max_issued=0) == [
        "bob", "cat", "fay", "hal", "kim", "lou",
    ]  # fmt: skip
    # Two welcome codes: jon (his newer one used) and kim; only kim still holds one.
    assert history.ids("welcome", issued_from=["welcome"], min_issued=2) == ["kim"]
    # Sent any code since yesterday: m1 went out five days ago, summer today.
    assert history.ids("welcome", since=history.built - DAY) == ["ann", "hal", "kim", "lou"]
    assert history.ids("welcome", issued_from=["welcome"], since=history.built - DAY) == [
        "hal", "kim", "lou",
    ]  # fmt: skip


def test_pages_and_slices_give_the_same_segment(history: History) -> None:
    expected = history.ids("welcome")
    listed: list[str] = []
    after: str | None = None
    while True:
        page = segment_page(
            history.engine, unredeemed_from=["welcome"], now=history.now, after=after, limit=2
        )
        listed.extend(page.items)
        after = page.next
        if after is None:
            break
    assert listed == expected
    # A view limited to some pools: another pool does not exist for it.
    limited = segment_page(history.engine, unredeemed_from=["summer"], pools={"summer"})
    assert limited.items == ["ann", "ned", "oli"]
    with pytest.raises(PoolNotFound, match="'welcome'"):
        segment_page(history.engine, unredeemed_from=["welcome"], pools={"summer"})
    # The slices a recipients file is matched by.
    with read_transaction(history.engine) as conn:
        prepared = prepare_segment(conn, SegmentFilters(unredeemed_from=["welcome"]))
        with closing(prepared.ids(conn, customers=["zed", "kim", "jon", "ann"])) as ids:
            assert list(ids) == ["ann", "kim"]


def test_refusals(history: History) -> None:
    with pytest.raises(PoolNotFound, match="'winter'"):
        history.ids("welcome", "winter")
    with pytest.raises(SegmentError, match=r"^expiring_within narrows a reminder segment"):
        segment(history.engine, issued_from=["welcome"], expiring_within=DAY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("36h", 36 * HOUR), ("7d", 7 * DAY), ("2w", 14 * DAY), (" 7d ", 7 * DAY), ("3660d", None)],
)
def test_expiry_windows_read(text: str, expected: timedelta | None) -> None:
    assert parse_expiring_within(text) == (expected or MAX_EXPIRING_WITHIN)


@pytest.mark.parametrize("text", ["7", "7m", "7 d", "0d", "3661d", "-1d", "1.5d", "d", "", "7D"])
def test_expiry_windows_refused(text: str) -> None:
    with pytest.raises(SegmentError, match=f"^{text!r} is not an expiry window"):
        parse_expiring_within(text)


# -- the segment against a model -----------------------------------------------------


@dataclass(frozen=True)
class _PoolKind:
    multi_use: bool = False
    valid_days: int | None = None


@st.composite
def _histories(draw: st.DrawFn) -> dict[str, Any]:
    kinds = draw(
        st.lists(
            st.sampled_from(
                [_PoolKind(), _PoolKind(multi_use=True), _PoolKind(valid_days=2), _PoolKind()]
            ),
            min_size=1,
            max_size=2,
        )
    )
    # Hours from the history's start to each code's end (None: never ends).
    ends = st.one_of(st.none(), st.integers(1, 300))
    pools = [
        {
            "kind": kind,
            "ends": draw(st.lists(ends, min_size=1, max_size=1 if kind.multi_use else 6)),
        }
        for kind in kinds
    ]
    # Few customers and many steps: the same customer is sent several codes of one
    # pool, uses some of them, gets some back, so "which code counts" is tested.
    customers = 3
    issue = st.tuples(
        st.just("issue"),
        st.integers(0, len(pools) - 1),
        st.lists(st.integers(0, customers - 1), min_size=1, max_size=customers, unique=True),
        st.integers(0, 100),  # hours before the start it was sent
    )
    redeem = st.tuples(
        st.just("redeem"),
        st.integers(0, 50),  # which issuance (by position)
        st.sampled_from(["own", "other", "anon"]),  # who uses it: its holder, another, nobody named
    )
    step = st.one_of(
        issue,
        redeem,
        redeem,
        st.tuples(st.just("unredeem"), st.integers(0, 50)),
        st.tuples(st.just("return"), st.integers(0, 50)),
    )
    return {
        "pools": pools,
        "customers": customers,
        # Codes go out first, then are used, refunded, returned, and sent again.
        "steps": draw(st.lists(issue, min_size=2, max_size=5))
        + draw(st.lists(step, min_size=2, max_size=16)),
        "asked": draw(st.integers(0, 320)),  # hours after the start the segment is asked
        "within": draw(st.one_of(st.none(), st.integers(1, 200))),
    }


@dataclass
class _Issued:
    customer: str
    pool: str
    code: str
    mailing: str
    sent: datetime
    order: int
    returned: bool = False


@dataclass(frozen=True)
class _Used:
    code: str
    pool: str
    by: str | None
    order: str


def _model(
    issued: list[_Issued],
    used: list[_Used],
    pools: dict[str, _PoolKind],
    ends: dict[tuple[str, str], datetime | None],
    now: datetime,
    within: timedelta | None,
) -> list[str]:
    """The reminder segment, from the rules as a person states them."""
    holders: set[str] = set()
    for pool_id, kind in pools.items():
        latest: dict[str, _Issued] = {}
        for item in issued:
            if item.pool != pool_id or item.returned:
                continue
            if item.customer not in latest or item.sent >= latest[item.customer].sent:
                latest[item.customer] = item  # ties: the later issuance
        for customer, item in latest.items():
            if kind.multi_use:
                redeemed = any(u.code == item.code and u.by == customer for u in used)
            else:
                redeemed = any(u.code == item.code and u.pool == pool_id for u in used)
            expiry = ends[(pool_id, item.code)]
            if kind.valid_days is not None:
                valid_until = item.sent + timedelta(days=kind.valid_days)
                expiry = valid_until if expiry is None else min(expiry, valid_until)
            live = expiry is None or expiry > now
            soon = within is None or (expiry is not None and expiry <= now + within)
            if not redeemed and live and soon:
                holders.add(customer)
    return sorted(holders)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=_histories())
def test_the_segment_is_the_model(engine: Engine, history: dict[str, Any]) -> None:
    tag = uuid.uuid4().hex[:8]
    start = utcnow()
    kinds: dict[str, _PoolKind] = {}
    ends: dict[tuple[str, str], datetime | None] = {}
    for number, pool in enumerate(history["pools"]):
        pool_id = f"p{number}-{tag}"
        kind: _PoolKind = pool["kind"]
        kinds[pool_id] = kind
        rows = []
        for index, hours in enumerate(pool["ends"]):
            code = f"{pool_id}-C{index}"
            end = start + hours * HOUR if hours is not None else None
            ends[(pool_id, code)] = end
            rows.append(f"{code},{_at(end) if end else ''}\n")
        make_pool(
            engine,
            pool_id,
            csv_text="code,available_till\n" + "".join(rows),
            multi_use=kind.multi_use,
            require_issued=kind.valid_days is not None,
            issued_valid_days=kind.valid_days,
        )
    customers = [f"c{i}-{tag}" for i in range(history["customers"])]
    pool_ids = list(kinds)
    issued: list[_Issued] = []
    used: list[_Used] = []
    for number, step in enumerate(history["steps"]):
        live = [item for item in issued if not item.returned]
        if step[0] == "issue":
            _, pool_index, who, hours_before = step
            pool_id, mailing = pool_ids[pool_index], f"m{number}-{tag}"
            given_codes = claim(engine, pool_id, mailing, [customers[i] for i in who], partial=True)
            sent = start - hours_before * HOUR
            _backdate(engine, sent, mailing)
            issued.extend(
                _Issued(customer, pool_id, code, mailing, sent, number)
                for customer, code in given_codes.items()
            )
        elif step[0] == "redeem" and live:
            _, position, who_redeems = step
            item = live[position % len(live)]
            by = {
                "own": item.customer,
                "other": next(c for c in customers if c != item.customer),
                "anon": None,
            }[who_redeems]
            order = f"o{number}-{tag}"
            # An hour after it was sent: inside every validity period.
            at = item.sent + HOUR
            result = redeem(engine, item.code, customer=by, order=order, pool=item.pool, now=at)
            if result.ok:  # refused when already used
                used.append(_Used(item.code, item.pool, by, order))
        elif step[0] == "unredeem" and used:
            undone = used.pop(step[1] % len(used))
            unredeem(engine, undone.code, order=undone.order, pool=undone.pool)
        elif step[0] == "return" and live:
            item = live[step[1] % len(live)]
            report = return_codes(engine, item.mailing, [item.customer], reason="bounce")
            # Which codes may go back is the returns' rule; the model takes the store's word.
            item.returned = report.returned == 1
    now = start + history["asked"] * HOUR
    within = history["within"] * HOUR if history["within"] is not None else None
    expected = _model(issued, used, kinds, ends, now, within)
    assert segment(engine, unredeemed_from=pool_ids, expiring_within=within, now=now) == expected
    # Each pool alone, and the slice of a file holding every other customer.
    for pool_id in pool_ids:
        alone = _model(issued, used, {pool_id: kinds[pool_id]}, ends, now, within)
        assert segment(engine, unredeemed_from=[pool_id], expiring_within=within, now=now) == alone
    with read_transaction(engine) as conn:
        filters = SegmentFilters(unredeemed_from=pool_ids, expiring_within=within)
        prepared = prepare_segment(conn, filters, now=now)
        chosen = customers[::2]
        with closing(prepared.ids(conn, customers=chosen)) as ids:
            assert list(ids) == [c for c in expected if c in chosen]
