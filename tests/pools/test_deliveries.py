"""Delivery states and events in the store (SPEC 8, invariant 12): pools.after_sending.deliveries."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

import promomail.pools.after_sending.send_log as send_log
from promomail.pools.after_sending.deliveries import (
    list_deliveries,
    record_send,
    record_sent,
    to_send,
)
from promomail.pools.after_sending.delivery_events import apply_event, seen_token
from promomail.pools.after_sending.returns import return_codes
from promomail.pools.after_sending.send_log import DeliveryLog
from promomail.pools.errors import InvalidSetting, MailingNotFound
from promomail.pools.issuing.mailings import show_mailing
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import read_transaction
from tests.support.invariants import (
    check_invariants,
    check_message_returns,
    mailing_codes,
    status_counts,
)
from tests.support.racing import apply_event_when_released, run_together
from tests.support.render_helpers import (
    EVERY_PART,
    customer_ids,
    read_jsonl,
    render,
    write_recipients,
    write_template,
)
from tests.support.store_helpers import make_pool

MANUAL = "manual return"
#: A mailing per hypothesis example, in one store per test (and its pool, made once).
_mailings = itertools.count()
_pool_made: dict[str, bool] = {}


def _render(
    db_url: str, engine: Engine, tmp_path: Path, run: str = "1", n: int = 3
) -> dict[str, str]:
    """Render mailing "m" (one code from "spring" each); recipient → ref."""
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, customer_ids(n))
    out = tmp_path / f"out-{run}.jsonl"
    render(db_url, template, recipients, "m", out)
    return {r["recipient"]: r["ref"] for r in read_jsonl(out)}


@pytest.fixture
def refs(db_url: str, engine: Engine, tmp_path: Path) -> dict[str, str]:
    make_pool(engine, "spring", [f"SPRING{i}" for i in range(20)])
    return _render(db_url, engine, tmp_path)


def _event(engine: Engine, ref: str, kind: str, *, permanent: bool = False, id: str = "") -> str:
    return apply_event(
        engine,
        provider="test",
        event_id=id or f"{ref}-{kind}-{permanent}",
        ref=ref,
        kind=kind,  # type: ignore[arg-type]
        permanent=permanent,
        at=utcnow(),
        detail=f"{kind} detail",
    )


def _state(engine: Engine, ref: str) -> tuple[str, int] | None:
    with read_transaction(engine) as conn:
        row = conn.execute(
            text("SELECT status, codes_returned FROM deliveries WHERE ref = :r"), {"r": ref}
        ).first()
    return (row[0], row[1]) if row else None


def _checks(engine: Engine) -> None:
    check_invariants(engine, redemptions_possible=False)
    check_message_returns(engine, manual_reason=MANUAL)


def test_a_permanent_bounce_gives_back_that_messages_codes_once(
    engine: Engine, refs: dict[str, str]
) -> None:
    codes = mailing_codes(engine, "m", "spring")
    ann = refs["cust-00000"]
    assert _event(engine, ann, "bounce", permanent=True, id="e1") == "applied"
    assert _state(engine, ann) == ("bounced", 1)
    assert "cust-00000" not in mailing_codes(engine, "m", "spring")
    assert status_counts(engine, "spring") == {"available": 18, "issued": 2}
    # The same event again, and another permanent one: nothing more goes back.
    assert _event(engine, ann, "bounce", permanent=True, id="e1") == "duplicate"
    assert _event(engine, ann, "dropped", permanent=True, id="e2") == "applied"
    assert _state(engine, ann) == ("bounced", 1)
    assert status_counts(engine, "spring") == {"available": 18, "issued": 2}
    # The others' codes were never touched.
    assert mailing_codes(engine, "m", "spring") == {
        c: code for c, code in codes.items() if c != "cust-00000"
    }
    _checks(engine)


def test_transient_failures_are_recorded_and_give_nothing_back(
    engine: Engine, refs: dict[str, str]
) -> None:
    ann, bob = refs["cust-00000"], refs["cust-00001"]
    assert _event(engine, ann, "deferred") == "applied"
    assert _state(engine, ann) == ("deferred", 0)
    assert _event(engine, bob, "bounce", permanent=False) == "applied"
    assert _state(engine, bob) == ("deferred", 0)
    assert status_counts(engine, "spring") == {"available": 17, "issued": 3}
    # A service retrying a message: send leaves it alone.
    assert to_send(engine, "m", refs.values()) == {refs["cust-00002"]}
    _checks(engine)


def test_a_delivered_message_keeps_its_codes_whatever_comes_after(
    engine: Engine, refs: dict[str, str]
) -> None:
    ann, bob = refs["cust-00000"], refs["cust-00001"]
    assert _event(engine, ann, "delivered") == "applied"
    assert _event(engine, ann, "deferred") == "applied"
    assert _state(engine, ann) == ("delivered", 0)
    assert _event(engine, ann, "bounce", permanent=True) == "applied"
    assert _state(engine, ann) == ("delivered", 0)
    # A complaint means the person got it too.
    assert _event(engine, bob, "complaint") == "applied"
    assert _event(engine, bob, "dropped", permanent=True) == "applied"
    assert _state(engine, bob) == ("delivered", 0)
    assert status_counts(engine, "spring") == {"available": 17, "issued": 3}
    with read_transaction(engine) as conn:
        answer = conn.execute(
            text("SELECT answer FROM deliveries WHERE ref = :r"), {"r": ann}
        ).scalar()
    assert answer == "bounce detail"  # recorded, nothing more
    _checks(engine)


def test_a_bounce_after_a_transient_failure_gives_the_codes_back(
    engine: Engine, refs: dict[str, str]
) -> None:
    ann = refs["cust-00000"]
    _event(engine, ann, "deferred")
    _event(engine, ann, "bounce", permanent=True)
    assert _state(engine, ann) == ("bounced", 1)
    _checks(engine)


def test_an_unknown_reference_is_unmatched_and_recorded_nowhere(
    engine: Engine, refs: dict[str, str]
) -> None:
    assert _event(engine, "x" * 24, "bounce", permanent=True) == "unmatched"
    assert _event(engine, "x" * 24, "bounce", permanent=True) == "unmatched"
    with read_transaction(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM delivery_events")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM deliveries")).scalar() == 0
    assert status_counts(engine, "spring") == {"available": 17, "issued": 3}


def test_an_event_about_an_earlier_message_never_touches_the_new_code(
    db_url: str, engine: Engine, tmp_path: Path, refs: dict[str, str]
) -> None:
    old = refs["cust-00000"]
    assert _event(engine, old, "bounce", permanent=True, id="first") == "applied"
    new_refs = _render(db_url, engine, tmp_path, run="2")
    new = new_refs["cust-00000"]
    assert new != old
    given_again = mailing_codes(engine, "m", "spring")["cust-00000"]
    # Late events about the old message, of every kind: the new code stays.
    for n, kind in enumerate(["bounce", "dropped", "delivered", "deferred"]):
        assert _event(engine, old, kind, permanent=True, id=f"late{n}") == "applied"
    assert mailing_codes(engine, "m", "spring")["cust-00000"] == given_again
    assert _state(engine, new) is None
    # A manual return and the old message's bounce: the new code goes back once, by hand.
    return_codes(engine, "m", ["cust-00000"], reason=MANUAL)
    assert _event(engine, new, "bounce", permanent=True) == "applied"
    assert _state(engine, new) == ("bounced", 0)
    _checks(engine)


def test_the_relay_refusing_a_message_gives_its_codes_back_at_once(
    engine: Engine, refs: dict[str, str]
) -> None:
    ann, bob, cid = (refs[c] for c in customer_ids(3))
    assert to_send(engine, "m", refs.values()) == set(refs.values())
    assert (
        record_send(
            engine,
            recipient_id="cust-00000",
            ref=ann,
            state="sent",
            answer="250 ok",
            mailing_id="m",
        )
        == 0
    )
    assert (
        record_send(
            engine,
            recipient_id="cust-00001",
            ref=bob,
            state="deferred",
            answer="451 later",
            mailing_id="m",
        )
        == 0
    )
    assert to_send(engine, "m", refs.values()) == {bob, cid}
    returned = record_send(
        engine,
        recipient_id="cust-00002",
        ref=cid,
        state="failed",
        answer="550 no such user",
        mailing_id="m",
    )
    assert returned == 1
    assert _state(engine, cid) == ("failed", 1)
    with read_transaction(engine) as conn:
        reason = conn.execute(
            text("SELECT return_reason FROM issuances WHERE ref = :r"), {"r": cid}
        ).scalar()
    assert reason == "refused by the relay: 550 no such user"
    assert to_send(engine, "m", refs.values()) == {bob}
    # The deferred one goes out on the next run; answers about a message done change nothing.
    assert (
        record_send(
            engine, recipient_id="cust-00001", ref=bob, state="sent", answer="250", mailing_id="m"
        )
        == 0
    )
    assert (
        record_send(
            engine, recipient_id="cust-00002", ref=cid, state="failed", answer="550", mailing_id="m"
        )
        == 0
    )
    assert (
        record_send(
            engine, recipient_id="cust-00000", ref=ann, state="failed", answer="550", mailing_id="m"
        )
        == 0
    )
    assert _state(engine, ann) == ("sent", 0)
    assert to_send(engine, "m", refs.values()) == set()
    # A bounce of a message the relay refused gives nothing back a second time.
    assert _event(engine, cid, "bounce", permanent=True) == "applied"
    assert _state(engine, cid) == ("failed", 1)
    view = show_mailing(engine, "m").as_dict()
    assert view["delivery"] == {
        "sent": 2,
        "delivered": 0,
        "bounced": 0,
        "failed": 1,
        "deferred": 0,
        "codes_returned": 1,
    }
    assert view["returned"] == 1  # the existing fields stay
    with pytest.raises(InvalidSetting):
        record_send(engine, recipient_id="x", ref="r", state="lost", answer="", mailing_id="m")  # type: ignore[arg-type]
    _checks(engine)


def test_a_send_runs_log_records_each_answer_for_its_recipient(
    engine: Engine, refs: dict[str, str]
) -> None:
    log = DeliveryLog(engine, "m")
    ann, bob, cid = (refs[c] for c in customer_ids(3))
    assert log.to_send(refs.values()) == {ann, bob, cid}
    assert log.settled_before(refs.values()) == 0
    log.record(ann, "cust-00000", "sent", "250 ok")
    log.record(bob, "cust-00001", "failed", "550 unknown")
    log.record(cid, "cust-00002", "deferred", "421 busy")
    assert log.codes_returned == 1
    log.flush()
    assert log.to_send(refs.values()) == {cid}
    # What the next run's progress starts from: the deferred one is still to send.
    assert log.settled_before(refs.values()) == 2
    assert [(d.recipient, d.status) for d in list_deliveries(engine, "m")] == [
        ("cust-00000", "sent"),
        ("cust-00001", "failed"),
        ("cust-00002", "deferred"),
    ]
    _checks(engine)


def test_accepted_answers_move_deferred_messages_and_leave_settled_ones(
    engine: Engine, refs: dict[str, str]
) -> None:
    """A batch of 250s: a new message gets its row, one deferred before turns
    ``sent`` with one more attempt, and one refused before stays refused
    (its codes went back already)."""
    new, deferred, refused = (refs[c] for c in customer_ids(3))
    record_send(
        engine, mailing_id="m", recipient_id="cust-00001", ref=deferred,
        state="deferred", answer="421 busy",
    )  # fmt: skip
    record_send(
        engine, mailing_id="m", recipient_id="cust-00002", ref=refused,
        state="failed", answer="550 unknown",
    )  # fmt: skip
    accepted = [(ref, f"cust-0000{n}", "250 ok") for n, ref in enumerate((new, deferred, refused))]
    record_sent(engine, "m", accepted)
    shown = {d.recipient: (d.status, d.answer, d.attempts) for d in list_deliveries(engine, "m")}
    assert shown == {
        "cust-00000": ("sent", "250 ok", 1),
        "cust-00001": ("sent", "250 ok", 2),
        "cust-00002": ("failed", "550 unknown", 1),
    }
    record_sent(engine, "m", accepted)  # the same answers again change nothing
    again = {d.recipient: (d.status, d.answer, d.attempts) for d in list_deliveries(engine, "m")}
    assert again == shown
    _checks(engine)


def test_deliveries_are_listed_and_counted_per_mailing(
    engine: Engine, refs: dict[str, str]
) -> None:
    ann, bob, cid = (refs[c] for c in customer_ids(3))
    record_send(
        engine, mailing_id="m", recipient_id="cust-00000", ref=ann, state="sent", answer="250"
    )
    _event(engine, ann, "delivered")
    _event(engine, bob, "bounce", permanent=True)  # sent by other means
    listed = list_deliveries(engine, "m")
    assert [(d.recipient, d.status, d.codes_returned) for d in listed] == [
        ("cust-00000", "delivered", 0),
        ("cust-00001", "bounced", 1),
    ]
    assert listed[1].as_dict()["ref"] == bob
    assert [d.recipient for d in list_deliveries(engine, "m", status="bounced")] == ["cust-00001"]
    assert len(list_deliveries(engine, "m", limit=1)) == 1
    assert show_mailing(engine, "m").delivery.as_dict() == {
        "sent": 2,
        "delivered": 1,
        "bounced": 1,
        "failed": 0,
        "deferred": 0,
        "codes_returned": 1,
    }
    with pytest.raises(MailingNotFound):
        list_deliveries(engine, "nope")
    with pytest.raises(InvalidSetting, match="status"):
        list_deliveries(engine, "m", status="lost")
    assert cid not in {d.ref for d in listed}


def test_a_webhook_token_is_accepted_once_within_its_window(engine: Engine) -> None:
    now = utcnow()
    window = timedelta(minutes=5)
    assert seen_token(engine, "mailgun", "t1", now=now, window=window)
    assert not seen_token(engine, "mailgun", "t1", now=now + timedelta(minutes=1), window=window)
    assert seen_token(engine, "other", "t1", now=now, window=window)
    # Forgotten once older than the window (its timestamp is refused by then anyway).
    assert seen_token(engine, "mailgun", "t1", now=now + timedelta(minutes=6), window=window)
    with read_transaction(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM webhook_tokens")).scalar() == 2


def test_two_processes_bouncing_one_message_give_its_codes_back_once(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    make_pool(engine, "spring", [f"SPRING{i}" for i in range(20)])
    refs = _render(db_url, engine, tmp_path, n=4)
    for round_, ref in enumerate(refs.values()):
        outcomes = run_together(
            apply_event_when_released,
            [(db_url, f"{provider}-{round_}", ref) for provider in ("ses", "sendgrid")],
        )
        assert outcomes == ["applied", "applied"]
        assert _state(engine, ref) == ("bounced", 1)
    assert status_counts(engine, "spring") == {"available": 20}
    _checks(engine)


# -- any order, repeated ------------------------------------------------------------

KINDS = ["delivered", "bounce", "dropped", "complaint", "deferred"]
step = st.one_of(
    st.tuples(
        st.just("event"),
        st.integers(0, 5),  # which message, among every one rendered so far
        st.sampled_from(KINDS),
        st.booleans(),
        st.integers(0, 3),  # event id: a small range, so events repeat
    ),
    st.tuples(st.just("send"), st.integers(0, 5), st.sampled_from(["sent", "deferred", "failed"])),
    st.tuples(st.just("return"), st.integers(0, 2)),
    st.tuples(st.just("rerender")),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=12))
def test_events_in_any_order_keep_the_invariants(
    db_url: str, engine: Engine, tmp_path: Path, steps: list[tuple[Any, ...]]
) -> None:
    """Sends, events, returns and re-renders of a small mailing, in any order and repeated."""
    mailing = f"h{next(_mailings)}"
    if not _pool_made.get(db_url):
        make_pool(engine, "spring", [f"H{i:04d}" for i in range(400)])
        _pool_made[db_url] = True
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, customer_ids(3))
    messages: list[tuple[str, str]] = []  # (recipient, ref), every message rendered

    def rerender() -> None:
        out = tmp_path / f"{mailing}.jsonl"
        render(db_url, template, recipients, mailing, out)
        for record in read_jsonl(out):
            if (record["recipient"], record["ref"]) not in messages:
                messages.append((record["recipient"], record["ref"]))

    rerender()
    for n, action in enumerate(steps):
        if action[0] == "event":
            _, which, kind, permanent, event = action
            recipient, ref = messages[which % len(messages)]
            outcome = apply_event(
                engine,
                provider="h",
                event_id=f"{mailing}-{event}-{ref}",
                ref=ref,
                kind=kind,
                permanent=permanent,
                at=None,
                detail=f"step {n}",
            )
            assert outcome in ("applied", "duplicate")
        elif action[0] == "send":
            _, which, state = action
            recipient, ref = messages[which % len(messages)]
            record_send(
                engine,
                mailing_id=mailing,
                recipient_id=recipient,
                ref=ref,
                state=state,
                answer=f"step {n}",
            )
        elif action[0] == "return":
            return_codes(engine, mailing, [customer_ids(3)[action[1]]], reason=MANUAL)
        else:
            rerender()
        _checks(engine)
    # A recipient's current message (its live codes) was never failed or bounced.
    with read_transaction(engine) as conn:
        live_refs = {
            r
            for (r,) in conn.execute(
                text(
                    "SELECT DISTINCT ref FROM issuances WHERE mailing_id = :m "
                    "AND returned_at IS NULL"
                ),
                {"m": mailing},
            )
        }
        statuses: dict[str, str] = dict(
            conn.execute(
                text("SELECT ref, status FROM deliveries WHERE mailing_id = :m"), {"m": mailing}
            ).all()
        )
    assert not {statuses.get(r) for r in live_refs} & {"failed", "bounced"}


def test_codes_shown_again_in_a_changed_message_are_no_events_to_give_back(
    db_url: str, engine: Engine, tmp_path: Path, refs: dict[str, str]
) -> None:
    """A re-run with another template: the codes both messages show stay with their holders."""
    make_pool(engine, "autumn", [f"AUTUMN{i}" for i in range(5)])
    spring = mailing_codes(engine, "m", "spring")
    template = write_template(
        tmp_path,
        "{% block text %}{{ client.promocode('spring') }} {{ client.promocode('autumn') }}"
        "{% endblock %}",
        name="changed.j2",
    )
    recipients = write_recipients(tmp_path, customer_ids(3))
    render(db_url, template, recipients, "m", tmp_path / "changed.jsonl")
    changed = {r["recipient"]: r["ref"] for r in read_jsonl(tmp_path / "changed.jsonl")}
    old, new = refs["cust-00000"], changed["cust-00000"]
    assert old != new
    # The earlier message is no longer known; the new one names its own new code.
    assert _event(engine, old, "bounce", permanent=True) == "unmatched"
    assert _event(engine, new, "bounce", permanent=True) == "applied"
    assert _state(engine, new) == ("bounced", 1)
    assert mailing_codes(engine, "m", "spring") == spring
    assert "cust-00000" not in mailing_codes(engine, "m", "autumn")
    # The unchanged template again: what it shows again is named as before.
    render(db_url, template, recipients, "m", tmp_path / "again.jsonl")
    again = {r["recipient"]: r["ref"] for r in read_jsonl(tmp_path / "again.jsonl")}
    assert again["cust-00001"] == changed["cust-00001"]
    with read_transaction(engine) as conn:
        stamped = conn.execute(
            text(
                "SELECT pool_id, ref FROM issuances WHERE customer_id = 'cust-00001' "
                "AND returned_at IS NULL ORDER BY pool_id"
            )
        ).all()
    assert [tuple(r) for r in stamped] == [("autumn", again["cust-00001"]), ("spring", None)]
    _checks(engine)


def test_a_send_runs_log_is_safe_from_many_threads_and_answers_the_codes_returned(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    make_pool(engine, "spring", [f"SPRING{i}" for i in range(40)])
    refs = _render(db_url, engine, tmp_path, n=40)
    log = DeliveryLog(engine, "m")
    order = sorted(refs.values())
    recipients = {ref: recipient for recipient, ref in refs.items()}
    failing = set(order[:5])
    start = threading.Barrier(8)
    returned: list[int] = []

    def session(share: list[str]) -> None:
        start.wait()
        for ref in share:
            state = "failed" if ref in failing else "sent"
            answer = f"{'550' if ref in failing else '250'} x"
            returned.append(log.record(ref, recipients[ref], state, answer))

    threads = [threading.Thread(target=session, args=(order[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    # The codes given back are answered by the call that gave them back.
    assert sorted(returned) == [0] * 35 + [1] * 5
    assert log.codes_returned == 5
    states = {d.ref: d.status for d in list_deliveries(engine, "m")}
    assert states == {ref: "failed" if ref in failing else "sent" for ref in order}
    assert log.to_send(order) == set()
    _checks(engine)


def test_a_send_runs_log_keeps_at_most_its_window_of_answers_uncommitted(
    engine: Engine, refs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session waits once ``window`` accepted answers are uncommitted: that is
    all a crash can send twice. Commits are held back here until released."""
    release = threading.Event()
    committed: list[int] = []

    def held(engine: Engine, mailing_id: str, batch: list[tuple[str, str, str]]) -> None:
        release.wait(timeout=30)
        record_sent(engine, mailing_id, batch)
        committed.append(len(batch))

    monkeypatch.setattr(send_log, "record_sent", held)
    ann, bob, cid = (refs[c] for c in customer_ids(3))
    log = DeliveryLog(engine, "m", window=2)
    log.record(ann, "cust-00000", "sent", "250 ok")
    log.record(bob, "cust-00001", "sent", "250 ok")
    third = threading.Thread(target=log.record, args=(cid, "cust-00002", "sent", "250 ok"))
    third.start()
    third.join(timeout=0.5)
    assert third.is_alive()  # the window is full: the third answer waits
    assert list_deliveries(engine, "m") == []  # nothing committed yet
    # Uncommitted answers are not handed out again meanwhile.
    assert log.to_send(refs.values()) == {cid}
    release.set()
    third.join(timeout=30)
    log.close()
    assert sum(committed) == 3 and len(committed) >= 2
    assert {d.ref: d.status for d in list_deliveries(engine, "m")} == dict.fromkeys(
        (ann, bob, cid), "sent"
    )


def test_a_send_runs_log_reports_a_commit_that_failed(
    engine: Engine, refs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise OSError("the store went away")

    monkeypatch.setattr(send_log, "record_sent", broken)
    ann, bob = (refs[c] for c in customer_ids(2))
    log = DeliveryLog(engine, "m")
    log.record(ann, "cust-00000", "sent", "250 ok")
    with pytest.raises(OSError, match="went away"):
        log.flush()
    with pytest.raises(OSError, match="went away"):
        log.record(bob, "cust-00001", "sent", "250 ok")  # the run stops at its next answer
    with pytest.raises(OSError, match="went away"):
        log.close()
    assert list_deliveries(engine, "m") == []
