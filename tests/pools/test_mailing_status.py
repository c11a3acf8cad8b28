"""A mailing's status says what is true: shards not rendered yet, a cancellation.

The rules on their own (and, by hypothesis, over any set of shard runs), then
on SQLite and PostgreSQL through real renders and a real cancellation.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from promomail.pools.after_sending.deliveries import list_deliveries
from promomail.pools.after_sending.returns import cancel_mailing
from promomail.pools.errors import MailingNotFound
from promomail.pools.issuing.mailing_status import RunState, mailing_status
from promomail.pools.issuing.mailings import list_mailings, show_mailing
from promomail.templating.mailing.recipients import Shard
from tests.support.render_helpers import (
    EVERY_PART,
    customer_ids,
    pool_with_codes,
    render,
    write_recipients,
    write_template,
)

WHEN = datetime(2027, 3, 1, 9, 30)


def _status(*runs: tuple[str, str], cancelled: datetime | None = None) -> tuple[str, str]:
    found = mailing_status([RunState(shard, status) for shard, status in runs], cancelled)
    return found.state, found.text


def test_one_shard_of_two_is_partial() -> None:
    assert _status(("1/2", "finished")) == ("partial", "partial: 1 of 2 shards rendered")
    assert _status(("1/2", "finished"), ("2/2", "stopped")) == (
        "partial",
        "partial: 1 of 2 shards rendered; shard 2/2 stopped",
    )
    assert _status(("1/2", "finished"), ("2/2", "finished")) == ("finished", "finished")


def test_a_cancelled_mailing_says_so_whatever_its_runs_said() -> None:
    assert _status(("all", "finished"), cancelled=WHEN) == ("cancelled", "cancelled")
    assert _status(("1/4", "finished"), cancelled=WHEN)[0] == "cancelled"


def test_the_split_that_got_furthest_counts() -> None:
    # Rendered whole, then one shard again: every recipient was rendered.
    assert _status(("1/3", "finished"), ("all", "finished")) == ("finished", "finished")
    assert _status(("1/4", "finished"), ("2/4", "failed"), ("1/2", "finished"))[1] == (
        "partial: 1 of 2 shards rendered"
    )


def test_running_and_unfinished_single_runs() -> None:
    assert _status(("all", "running")) == ("running", "running")
    assert _status(("1/2", "finished"), ("2/2", "running")) == ("running", "running: shard 2/2")
    assert _status(("all", "stopped")) == ("stopped", "stopped")
    assert _status(("all", "interrupted")) == ("interrupted", "interrupted")
    assert _status() == ("partial", "partial: no run recorded")


def test_many_unfinished_shards_are_counted_not_all_named() -> None:
    runs = [(f"{k}/8", "finished" if k == 1 else "stopped") for k in range(1, 9)]
    assert _status(*runs)[1] == (
        "partial: 1 of 8 shards rendered; shard 2/8 stopped, shard 3/8 stopped, "
        "shard 4/8 stopped and 4 more"
    )


_STATES = st.sampled_from(["finished", "stopped", "interrupted", "failed", "running"])


@st.composite
def _runs(draw: st.DrawFn) -> list[RunState]:
    runs: list[RunState] = []
    for count in draw(st.sets(st.integers(1, 6), max_size=3)):
        for index in draw(st.sets(st.integers(1, count), min_size=1)):
            shard = "all" if count == 1 else f"{index}/{count}"
            runs.append(RunState(shard, draw(_STATES)))
    return runs


@given(_runs(), st.booleans())
def test_finished_means_every_shard_of_a_split_finished(
    runs: list[RunState], cancelled: bool
) -> None:
    found = mailing_status(runs, WHEN if cancelled else None)
    done: dict[int, set[str]] = {}
    for run in runs:
        count = 1 if run.shard == "all" else int(run.shard.partition("/")[2])
        if run.status == "finished":
            done.setdefault(count, set()).add(run.shard)
    complete = any(len(shards) == count for count, shards in done.items())
    running = any(run.status == "running" for run in runs)
    assert (found.state == "finished") == (complete and not running and not cancelled)
    assert (found.state == "cancelled") == cancelled
    assert 0 <= found.shards_rendered <= found.shards
    if found.state == "partial" and runs:
        assert found.text.startswith(
            f"partial: {found.shards_rendered} of {found.shards} shards rendered"
        )
        assert found.shards_rendered < found.shards


def test_a_render_of_one_shard_then_the_other_then_a_cancellation(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 60)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, customer_ids(20))

    render(db_url, template, recipients, "m1", tmp_path / "1.jsonl", shard=Shard(1, 2))
    shown = show_mailing(engine, "m1")
    assert (shown.status, shown.status_text) == ("partial", "partial: 1 of 2 shards rendered")
    document = shown.as_dict()
    assert (document["status"], document["status_text"]) == (
        "partial",
        "partial: 1 of 2 shards rendered",
    )
    assert [r["shard"] for r in document["runs"]] == ["1/2"]
    assert [m.status_text for m in list_mailings(engine)] == ["partial: 1 of 2 shards rendered"]

    render(db_url, template, recipients, "m1", tmp_path / "2.jsonl", shard=Shard(2, 2))
    assert show_mailing(engine, "m1").status == "finished"

    cancel_mailing(engine, "m1")
    cancelled = show_mailing(engine, "m1")
    assert (cancelled.status, cancelled.status_text) == ("cancelled", "cancelled")
    assert cancelled.cancelled_at is not None
    assert cancelled.as_dict()["cancelled_at"] is not None

    # Rendered again after all: live again, with new codes.
    again = render(db_url, template, recipients, "m1", tmp_path / "3.jsonl")
    assert again.totals.new_codes == 20
    live = show_mailing(engine, "m1")
    assert (live.status, live.cancelled_at, live.codes_issued) == ("finished", None, 20)


def test_an_unknown_mailing_close_to_a_recorded_one_suggests_it(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 10)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, customer_ids(2))
    render(db_url, template, recipients, "spring-sale", tmp_path / "1.jsonl")

    for refused in (
        lambda: show_mailing(engine, "spring-sael"),
        lambda: cancel_mailing(engine, "spring-sael"),
        lambda: list_deliveries(engine, "spring-sael"),
    ):
        with pytest.raises(MailingNotFound) as typo:
            refused()
        assert str(typo.value) == (
            "mailing 'spring-sael' does not exist (did you mean 'spring-sale'?)"
        )
    # A view limited to some pools is told of no mailing it cannot see.
    with pytest.raises(MailingNotFound) as limited:
        show_mailing(engine, "spring-sael", pools={"other"})
    assert str(limited.value) == "mailing 'spring-sael' does not exist"
