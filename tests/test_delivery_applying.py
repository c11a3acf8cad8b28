"""pools.after_sending.event_batches: a batch of events applied to the store, replays refused first."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from invariants import mailing_codes
from render_helpers import (
    EVERY_PART,
    customer_ids,
    read_jsonl,
    render,
    write_recipients,
    write_template,
)
from sqlalchemy import Engine, text
from store_helpers import make_pool

import pools.after_sending.event_batches
from delivery import DeliveryEvent, EventBatch, EventType
from pools import Applied, ReplayedRequest, apply_event_batch
from pools.store.clock import utcnow


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
        patched.setattr(pools.after_sending.event_batches, "apply_events", broken)
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
