"""Codes of undelivered messages go back: mailing return and cancel, in the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from promomail.pools.after_sending.redemption import redeem
from promomail.pools.after_sending.returns import (
    CANCELLED,
    AddressMatch,
    Unmatched,
    cancel_mailing,
    match_addresses,
    read_return_list,
    return_codes,
)
from promomail.pools.codes.counts import PoolCounts, pool_counts
from promomail.pools.errors import MailingNotFound, ReturnListError
from promomail.pools.history.customers import customer_history
from promomail.pools.history.export import export_issuances
from promomail.pools.issuing.claiming import claim, record_reissues
from promomail.pools.issuing.holdings import latest_codes, untouched_pools
from promomail.pools.issuing.mailings import show_mailing
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import read_transaction, write_transaction
from promomail.pools.store.models import Code, Mailing
from tests.support.invariants import check_invariants
from tests.support.racing import redeem_order_when_released, return_when_released, run_together
from tests.support.render_helpers import (
    full_snapshot,
    initial_codes,
    render,
    write_recipients,
    write_template,
)
from tests.support.store_helpers import make_pool


def _counts(engine: Engine, pool: str) -> PoolCounts:
    with read_transaction(engine) as conn:
        return pool_counts(conn, [pool])[pool]


def _mailing(engine: Engine, *ids: str) -> None:
    with engine.begin() as conn:  # what a render records about itself
        for mailing_id in ids:
            conn.execute(insert(Mailing).values(id=mailing_id, template="t", started_at=utcnow()))


def _code_id(engine: Engine, code: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(Code.id).where(Code.code == code)).scalar_one())


def test_returned_codes_go_back_to_the_pool(engine: Engine, tmp_path: Path) -> None:
    make_pool(engine, "spring", [f"SP-{i}" for i in range(6)])
    _mailing(engine, "m1", "m2")
    given = claim(engine, "spring", "m1", ["a", "b", "c", "d"])
    before = _counts(engine, "spring")

    report = return_codes(engine, "m1", ["a", "b", "b", "nobody"], reason="hard bounce")

    assert report.as_dict() == {
        "mailing": "m1",
        "returned": 2,
        "kept": {"redeemed": 0, "reissued": 0, "multi_use": 0},
    }
    assert report.not_issued == 1
    after = _counts(engine, "spring")
    assert after.available == before.available + 2 and after.issued == before.issued - 2
    assert after.total == after.available + after.issued
    check_invariants(engine)
    # The history keeps the returned issuances, marked.
    [issued] = customer_history(engine, "a").issuances
    assert issued.code == given["a"] and issued.return_reason == "hard bounce"
    assert issued.as_dict()["returned_at"] is not None
    assert customer_history(engine, "c").issuances[0].returned_at is None
    out = tmp_path / "issuances.csv"
    export_issuances(engine, out, mailing="m1")
    rows = {r[3]: r for r in (line.split(",") for line in out.read_text().splitlines()[1:])}
    assert out.read_text().splitlines()[0].endswith(",returned_at")
    assert rows["a"][-1] and rows["b"][-1] and not rows["c"][-1] and not rows["d"][-1]
    view = show_mailing(engine, "m1")
    assert (view.codes_issued, view.returned) == (2, 2)

    # Another mailing can hand out the returned codes…
    other = claim(engine, "spring", "m2", ["x", "y", "z", "w"])
    assert {given["a"], given["b"]} <= set(other.values())
    # …and a re-run of the returned mailing gives its returned recipients new codes.
    rerun = claim(engine, "spring", "m1", ["a", "b", "c", "d"], partial=True)
    assert rerun == {"c": given["c"], "d": given["d"]}  # the pool ran dry for a and b
    check_invariants(engine)


def test_a_rerun_gives_returned_recipients_new_codes(engine: Engine) -> None:
    make_pool(engine, "spring", [f"SP-{i}" for i in range(6)])
    _mailing(engine, "m1")
    given = claim(engine, "spring", "m1", ["a", "b", "c"])
    return_codes(engine, "m1", ["a"], reason=None)

    again = claim(engine, "spring", "m1", ["a", "b", "c"])

    assert (again["b"], again["c"]) == (given["b"], given["c"])
    with read_transaction(engine) as conn:
        assert latest_codes(conn, "spring", ["a"], exclude_mailing=None)["a"].code == again["a"]
    # A new issuance (the returned code was back in the pool, so it may be the same code).
    history = customer_history(engine, "a")
    assert [(i.code, i.returned_at is not None) for i in history.issuances] == [
        (given["a"], True),
        (again["a"], False),
    ]
    assert show_mailing(engine, "m1").codes_issued == 3
    check_invariants(engine)


def test_a_mailing_whose_codes_all_came_back_holds_nothing_from_the_pool(engine: Engine) -> None:
    """What a run need not look up: pools the mailing holds no live issuance from."""
    make_pool(engine, "spring", [f"SP-{i}" for i in range(6)])
    make_pool(engine, "autumn", [f"AU-{i}" for i in range(6)])
    _mailing(engine, "m1")
    claim(engine, "spring", "m1", ["a", "b"])
    claim(engine, "autumn", "m2", ["a"])
    reissued = _code_id(engine, "AU-0")
    with write_transaction(engine) as conn:
        record_reissues(conn, "m3", [("autumn", "a", reissued)], utcnow())
    pools = ["spring", "autumn"]

    def untouched(mailing: str) -> frozenset[str]:
        with read_transaction(engine) as conn:
            return untouched_pools(conn, mailing, pools)

    assert untouched("m1") == {"autumn"}
    assert untouched("m2") == {"spring"}
    assert untouched("m3") == {"spring"}  # a reissue counts
    assert untouched("m4") == {"spring", "autumn"}
    return_codes(engine, "m1", ["a"], reason=None)
    assert untouched("m1") == {"autumn"}  # b still holds its code
    return_codes(engine, "m1", ["b"], reason=None)
    assert untouched("m1") == {"spring", "autumn"}


def test_last_promocode_never_shows_a_returned_code(engine: Engine) -> None:
    make_pool(engine, "spring", [f"SP-{i}" for i in range(4)])
    _mailing(engine, "m1", "m2")
    first = claim(engine, "spring", "m1", ["a"])["a"]
    second = claim(engine, "spring", "m2", ["a"])["a"]
    return_codes(engine, "m2", ["a"], reason="suppressed")

    with read_transaction(engine) as conn:
        shown = latest_codes(conn, "spring", ["a"], exclude_mailing=None)
    assert shown["a"].code == first != second
    return_codes(engine, "m1", ["a"], reason="suppressed")
    with read_transaction(engine) as conn:
        assert latest_codes(conn, "spring", ["a"], exclude_mailing=None) == {}


def test_redeemed_reissued_and_shared_codes_are_kept(engine: Engine) -> None:
    make_pool(engine, "spring", [f"SP-{i}" for i in range(6)])
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    _mailing(engine, "m1", "m2")
    given = claim(engine, "spring", "m1", ["a", "b", "c"])
    claim(engine, "summer", "m1", ["a", "b"])
    assert redeem(engine, given["a"], customer="a", order="o1").ok
    with write_transaction(engine) as conn:  # m2 showed b's code again (last_promocode)
        record_reissues(conn, "m2", [("spring", "b", _code_id(engine, given["b"]))], utcnow())
    before = _counts(engine, "spring")

    report = return_codes(engine, "m1", ["a", "b", "c"], reason="bounce")

    assert report.as_dict() == {
        "mailing": "m1",
        "returned": 1,
        "kept": {"redeemed": 1, "reissued": 1, "multi_use": 2},
    }
    assert _counts(engine, "spring").available == before.available + 1
    assert _counts(engine, "summer") == PoolCounts(total=1, available=1)
    with engine.connect() as conn:
        live = conn.execute(
            text("SELECT customer_id FROM issuances WHERE returned_at IS NULL ORDER BY 1")
        ).all()
    assert [r[0] for r in live] == ["a", "a", "b", "b", "b"]
    check_invariants(engine)


def test_the_database_refuses_a_second_live_holder(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1", "SP-2"])
    _mailing(engine, "m1")
    code = claim(engine, "spring", "m1", ["a"])["a"]
    insert_holder = text(
        "INSERT INTO issuances (pool_id, code_id, customer_id, mailing_id, kind, slot, "
        "exclusive, issued_at) VALUES ('spring', :code, :customer, :mailing, 'initial', 0, "
        ":exclusive, :now)"
    )
    params: dict[str, Any] = {"code": _code_id(engine, code), "exclusive": True, "now": utcnow()}
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert_holder, {**params, "customer": "b", "mailing": "m9"})
    with pytest.raises(IntegrityError), engine.begin() as conn:  # a second code in m1 for a
        other = _code_id(engine, "SP-2")
        conn.execute(insert_holder, {**params, "code": other, "customer": "a", "mailing": "m1"})

    return_codes(engine, "m1", ["a"], reason=None)

    with engine.begin() as conn:  # returned: the code may have a new live holder
        conn.execute(insert_holder, {**params, "customer": "b", "mailing": "m9"})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert_holder, {**params, "customer": "c", "mailing": "m8"})


def test_cancel_gives_back_every_code(engine: Engine) -> None:
    make_pool(engine, "spring", [f"SP-{i}" for i in range(5)])
    _mailing(engine, "m1", "m2")
    claim(engine, "spring", "m1", ["a", "b", "c"])
    claim(engine, "spring", "m2", ["d"])

    report = cancel_mailing(engine, "m1")

    assert report.as_dict()["returned"] == 3
    assert _counts(engine, "spring").available == 4
    assert [i.return_reason for i in customer_history(engine, "b").issuances] == [CANCELLED]
    assert customer_history(engine, "d").issuances[0].returned_at is None
    again = cancel_mailing(engine, "m1", reason="twice")
    assert again.as_dict() == {
        "mailing": "m1",
        "returned": 0,
        "kept": {"redeemed": 0, "reissued": 0, "multi_use": 0},
    }
    check_invariants(engine)


def test_unknown_mailing_is_refused_and_changes_nothing(engine: Engine) -> None:
    make_pool(engine, "spring", ["SP-1"])
    before = full_snapshot(engine)
    with pytest.raises(MailingNotFound, match="'nope'"):
        return_codes(engine, "nope", ["a"], reason=None)
    with pytest.raises(MailingNotFound, match="'nope'"):
        cancel_mailing(engine, "nope")
    assert full_snapshot(engine) == before


# --- reading who bounced ---------------------------------------------------------


def test_return_lists_by_id_or_address(tmp_path: Path) -> None:
    recipients = tmp_path / "recipients.csv"
    recipients.write_text("id,email,first_name\na,a@x.org,A\nb,b@x.org,B\n", encoding="utf-8")
    bounces = tmp_path / "bounces.csv"
    bounces.write_text("Email,Reason\nB@X.org,hard\n\nnobody@x.org,hard\n", encoding="utf-8")
    jsonl = tmp_path / "bounces.jsonl"
    jsonl.write_text('{"customer_id": "c"}\n\n{"email": "a@x.org"}\n', encoding="utf-8")

    assert read_return_list(recipients).ids == ["a", "b"]
    by_address = read_return_list(bounces)
    assert (by_address.ids, by_address.emails) == ([], [(2, "B@X.org"), (4, "nobody@x.org")])
    mixed = read_return_list(jsonl)
    assert (mixed.ids, mixed.emails) == (["c"], [(3, "a@x.org")])
    directory = [("a", "a@x.org"), ("b", "b@x.org")]
    assert match_addresses(mixed, directory) == AddressMatch(["c", "a"], [])
    # An address nobody has is kept with its line; the others still match.
    assert match_addresses(by_address, directory) == AddressMatch(
        ["b"], [Unmatched(4, "nobody@x.org")]
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "name,phone\nx,1\n", r"a.csv, line 1: the header names no recipient column"),
        ("b.csv", "id,email,why\n,,bounce\n", r"b.csv, line 2: no recipient id or e-mail"),
        ("c.jsonl", '{"id": "a"}\n[1]\n', r"c.jsonl, line 2: not a JSON object"),
        ("d.jsonl", "{oops\n", r"d.jsonl, line 1: not JSON"),
        ("e.csv", 'id\n"a"b\n', r"e.csv, line 2: malformed CSV"),
        # Ambiguous lists, refused as the recipients reader refuses them.
        (
            "f.csv",
            "id,email,ID\na,a@x.org,b\n",
            r"f.csv, line 1: columns 'id' and 'ID' are both the 'id' column",
        ),
        ("g.jsonl", '{"id": ["a", "b"]}\n', r"g.jsonl, line 1: 'id' holds a nested JSON value"),
        ("h.csv", 'id\nok\n"a\x01b"\n', r"h.csv, line 3: the id holds a control character"),
    ],
)
def test_bad_return_lists_name_file_and_line(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ReturnListError, match=message):
        read_return_list(path)


def test_missing_return_list_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReturnListError, match="cannot read"):
        read_return_list(tmp_path / "absent.csv")


def test_a_code_shown_again_by_a_later_render_is_kept(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    make_pool(engine, "spring", [f"SP-{i}" for i in range(4)])
    make_pool(engine, "summer", [f"SU-{i}" for i in range(4)])
    recipients = write_recipients(tmp_path, ["ann", "bob"])
    first = write_template(tmp_path, "{{ client.promocode('spring') }}", "first.j2")
    second = write_template(
        tmp_path,
        "{{ client.promocode('summer') }} {{ client.last_promocode('spring') }}",
        "second.j2",
    )
    render(db_url, first, recipients, "m1", tmp_path / "m1.jsonl")
    given = initial_codes(engine, "m1", "spring")
    render(db_url, second, write_recipients(tmp_path, ["ann"]), "m2", tmp_path / "m2.jsonl")

    report = return_codes(engine, "m1", ["ann", "bob"], reason="bounce")

    assert report.as_dict()["returned"] == 1
    assert report.as_dict()["kept"] == {"redeemed": 0, "reissued": 1, "multi_use": 0}
    with read_transaction(engine) as conn:
        shown = latest_codes(conn, "spring", ["ann", "bob"], exclude_mailing=None)
    assert {c: i.code for c, i in shown.items()} == {"ann": given["ann"]}
    # The later mailing's own reissue goes back when that mailing is returned.
    assert return_codes(engine, "m2", ["ann"], reason=None).as_dict()["returned"] == 1
    assert return_codes(engine, "m1", ["ann"], reason=None).as_dict()["returned"] == 1
    check_invariants(engine)


def _return_or_redeem(barrier: Any, url: str, code: str, customer: str, action: str) -> Any:
    if action == "return":
        return return_when_released(barrier, url, "m1", [customer])
    return redeem_order_when_released(barrier, url, code, "buyer", f"order-{customer}")


def test_a_return_racing_a_redemption_stays_consistent(engine: Engine, db_url: str) -> None:
    make_pool(engine, "spring", [f"SP-{i}" for i in range(4)])
    _mailing(engine, "m1")
    for customer in ("ann", "bob", "cid"):
        code = claim(engine, "spring", "m1", [customer])[customer]

        returned, (ok, _, replayed) = run_together(
            _return_or_redeem,
            [(db_url, code, customer, "return"), (db_url, code, customer, "redeem")],
        )

        assert ok and not replayed, customer
        with engine.connect() as conn:
            issued_to = conn.execute(
                text(
                    "SELECT r.issued_to FROM redemptions r JOIN codes c ON c.id = r.code_id "
                    "WHERE c.code = :code"
                ),
                {"code": code},
            ).scalar_one()
        # Returned first: the checkout redeemed a code nobody held. Redeemed first: kept.
        assert (returned, issued_to) in ((1, None), (0, customer)), (returned, issued_to)
        check_invariants(engine)
