"""pools.after_sending.event_batches: a batch of events applied to the store, replays refused first."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

import promomail.pools.after_sending.event_batches
from promomail.delivery.events import DeliveryEvent, EventBatch, EventType
from promomail.pools import Applied, EventApplier, ReplayedRequest
from promomail.pools.after_sending.delivery_events import apply_events
from promomail.pools.after_sending.event_batches import apply_event_batch
from promomail.pools.errors import InvalidSetting
from promomail.pools.store.clock import utcnow
from tests.support.invariants import mailing_codes
from tests.support.render_helpers import (
    EVERY_PART,
    customer_ids,
    read_jsonl,
    render,
    wait_until,
    write_recipients,
    write_template,
)
from tests.support.store_helpers import make_pool


@pytest.fixture
def refs(db_url: str, engine: Engine, tmp_path: Path) -> dict[str, str]:
    make_pool(engine, "spring", [f"SPRING{i}" for i in range(6)])
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, customer_ids(2))
    render(db_url, template, recipients, "m", tmp_path / "out.jsonl")
    return {r["recipient"]: r["ref"] for r in read_jsonl(tmp_path / "out.jsonl")}


def _bounce(ref: str | None, event_id: str = "mg-1") -> DeliveryEvent:
    return DeliveryEvent("mailgun", event_id, ref, EventType.BOUNCE, True, None, "550 no")


def _tokens(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM webhook_tokens")).scalar_one())


def test_outcomes_are_counted(engine: Engine, refs: dict[str, str]) -> None:
    ann = refs["cust-00000"]
    batch = EventBatch(
        [_bounce(ann, "a"), _bounce(ann, "a"), _bounce(None, "b"), _bounce("Zz", "c")]
    )
    assert apply_event_batch(engine, "mailgun", batch, now=utcnow()) == Applied(1, 1, 2)
    assert set(mailing_codes(engine, "m", "spring")) == {"cust-00001"}


def test_a_replayed_token_is_refused_before_any_event_is_applied(
    engine: Engine, refs: dict[str, str]
) -> None:
    ann, bob = (refs[c] for c in customer_ids(2))
    now = utcnow()
    first = EventBatch([_bounce(ann, "a")], replay_token="t1", replay_expires=now)
    assert apply_event_batch(engine, "mailgun", first, now=now).applied == 1
    replay = EventBatch([_bounce(bob, "b")], replay_token="t1", replay_expires=now)
    with pytest.raises(ReplayedRequest, match="seen before"):
        apply_event_batch(engine, "mailgun", replay, now=now + timedelta(minutes=1))
    assert set(mailing_codes(engine, "m", "spring")) == {"cust-00001"}


def test_a_failed_batch_forgets_its_token_so_the_retry_applies(
    engine: Engine, refs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = refs["cust-00000"]
    batch = EventBatch([_bounce(ann, "a")], replay_token="t2", replay_expires=utcnow())

    def broken(*_args: Any, **_kwargs: Any) -> str:
        raise RuntimeError("the store went away")

    with monkeypatch.context() as patched:
        patched.setattr(promomail.pools.after_sending.event_batches, "apply_events", broken)
        with pytest.raises(RuntimeError):
            apply_event_batch(engine, "mailgun", batch, now=utcnow())
    assert _tokens(engine) == 0
    assert apply_event_batch(engine, "mailgun", batch, now=utcnow()).applied == 1
    assert _tokens(engine) == 1


def test_events_of_one_batch_apply_in_their_order_per_message(
    engine: Engine, refs: dict[str, str]
) -> None:
    ann, bob = (refs[c] for c in customer_ids(2))

    def event(ref: str, event_id: str, kind: EventType) -> DeliveryEvent:
        return DeliveryEvent("sendgrid", event_id, ref, kind, True, None, "")

    # Ann's delivery comes before her (late, out of order) bounce: her code stays.
    # Bob's bounce comes first: his code goes back, and the delivery after it changes nothing.
    batch = EventBatch(
        [
            event(bob, "b1", EventType.BOUNCE),
            event(ann, "a1", EventType.DELIVERED),
            event(bob, "b2", EventType.DELIVERED),
            event(ann, "a2", EventType.BOUNCE),
        ]
    )
    assert apply_event_batch(engine, "sendgrid", batch, now=utcnow()) == Applied(4, 0, 0)
    assert set(mailing_codes(engine, "m", "spring")) == {"cust-00000"}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT ref, status FROM deliveries")).all()
    states = {str(ref): str(status) for ref, status in rows}
    assert states == {ann: "delivered", bob: "bounced"}


def _sendgrid(ref: str, event_id: str, kind: EventType) -> DeliveryEvent:
    return DeliveryEvent("sendgrid", event_id, ref, kind, True, None, "")


def test_concurrent_requests_share_transactions_and_each_gets_its_own_outcomes(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one request's transaction is held back, the six that arrive meanwhile
    are applied together in the next one, each answered with its own counts."""
    make_pool(engine, "spring", [f"SPRING{i}" for i in range(6)])
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, customer_ids(6))
    render(db_url, template, recipients, "m", tmp_path / "out.jsonl")
    refs = [r["ref"] for r in read_jsonl(tmp_path / "out.jsonl")]
    transactions: list[int] = []
    first_started, release = threading.Event(), threading.Event()

    def counted(engine: Engine, events: list[Any], **kwargs: Any) -> list[Any]:
        if not transactions:
            transactions.append(len(events))
            first_started.set()
            release.wait(timeout=30)
        else:
            transactions.append(len(events))
        return apply_events(engine, events, **kwargs)

    monkeypatch.setattr(promomail.pools.after_sending.event_batches, "apply_events", counted)
    applier = EventApplier(engine)
    answers: dict[int, Applied] = {}

    def post(n: int, events: list[DeliveryEvent]) -> None:
        answers[n] = applier.apply("sendgrid", EventBatch(events), now=utcnow())

    # The first request bounces message 0; then six arrive while it is applied:
    # bounces of 1..4, a delivery of 5, and the first bounce again (a duplicate).
    first = threading.Thread(target=post, args=(0, [_sendgrid(refs[0], "e0", EventType.BOUNCE)]))
    first.start()
    assert first_started.wait(timeout=30)
    later = [[_sendgrid(refs[n], f"e{n}", EventType.BOUNCE)] for n in range(1, 5)]
    later += [
        [_sendgrid(refs[5], "e5", EventType.DELIVERED)],
        [_sendgrid(refs[0], "e0", EventType.BOUNCE)],
    ]
    threads = [threading.Thread(target=post, args=(n, events)) for n, events in enumerate(later, 1)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(applier._queued) == 6, what="six requests queued")
    release.set()
    for thread in [first, *threads]:
        thread.join(timeout=30)
    assert transactions == [1, 6]
    assert [answers[n] for n in range(7)] == [Applied(1, 0, 0)] * 6 + [Applied(0, 1, 0)]
    assert set(mailing_codes(engine, "m", "spring")) == {"cust-00005"}


def test_a_request_with_an_unknown_kind_fails_alone(engine: Engine, refs: dict[str, str]) -> None:
    ann = refs["cust-00000"]
    bad = DeliveryEvent("sendgrid", "x", ann, "opened", True, None, "")  # type: ignore[arg-type]
    applier = EventApplier(engine)
    with pytest.raises(InvalidSetting, match="opened"):
        applier.apply("sendgrid", EventBatch([bad]), now=utcnow())
    good = EventBatch([_sendgrid(ann, "y", EventType.BOUNCE)])
    assert applier.apply("sendgrid", good, now=utcnow()) == Applied(1, 0, 0)
