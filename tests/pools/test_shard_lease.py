"""One render per mailing and shard at a time, on SQLite and PostgreSQL.

A second run while the first renders is refused at once naming the first
(host, pid, start), and the first completes; a run killed with ``kill -9``
is taken over by the next one once its lease expired (at once on its own
machine, where its pid is known to be gone); a run whose lease was taken
over stops without settling anything more. Real processes where a process
must run, die or race.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from promomail.pools.errors import LeaseHeld, LeaseLost
from promomail.pools.issuing.claiming import reserve
from promomail.pools.issuing.leases import (
    Lease,
    LeaseKeeper,
    acquire_lease,
    check_lease,
    lease_holder,
    release_lease,
    renew_lease,
    send_lease_label,
    store_now,
)
from promomail.pools.issuing.mailings import show_mailing
from promomail.pools.store.db import read_transaction, write_transaction
from promomail.templating.mailing.run import render_mailing
from tests.support.cli_helpers import promomail_command
from tests.support.invariants import (
    check_invariants,
    check_no_reservations,
    count_issuances,
    mailing_codes,
    records_by_recipient,
    stderr_is_clean_error,
)
from tests.support.racing import run_together
from tests.support.render_helpers import (
    EVERY_PART,
    TESTS_DIR,
    counts,
    customer_ids,
    full_snapshot,
    pool_with_codes,
    read_jsonl,
    request_for,
    wait_until,
    write_recipients,
    write_template,
)

MAILING = "m-lease"
SCOPE = f"{MAILING}|all"

#: Runs the real command line in a process whose template renders slowly
#: (``pause`` seconds per recipient), so a test can act while it renders.
_PACED_CLI = """\
import sys, time
sys.path.insert(0, sys.argv[1])
pause = float(sys.argv[2])
from promomail.templating.template.message import MessageTemplate
original = MessageTemplate.render
def slowed(self, *args, **kwargs):
    time.sleep(pause)
    return original(self, *args, **kwargs)
MessageTemplate.render = slowed
from promomail import cli
cli.cli.main(args=sys.argv[3:], prog_name="promomail")
"""


def _paced_cli(db_url: str, pause: float, *args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        _PACED_CLI,
        str(TESTS_DIR.parent),
        str(pause),
        "--db",
        db_url,
        *args,
    ]


@contextmanager
def _running(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A child process that never outlives the test."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()


def _render_args(template: str, recipients: str, out: Path, *extra: str) -> list[str]:
    return [
        "render",
        template,
        "--recipients",
        recipients,
        "--mailing",
        MAILING,
        "--out",
        str(out),
        "--chunk-size",
        "20",
        *extra,
    ]


def _setup(
    engine: Engine, tmp_path: Path, recipients: int, codes: int
) -> tuple[str, str, list[str]]:
    pool_with_codes(engine, "spring", codes)
    ids = customer_ids(recipients)
    return write_template(tmp_path, EVERY_PART), write_recipients(tmp_path, ids), ids


def _check_complete(engine: Engine, out: Path, ids: list[str], codes: int) -> None:
    """Every recipient has one code, in the store and in the output; nothing held."""
    check_invariants(engine, redemptions_possible=False)
    check_no_reservations(engine)
    stored = mailing_codes(engine, MAILING, "spring")
    assert sorted(stored) == sorted(ids)
    assert len(set(stored.values())) == len(ids)
    records = records_by_recipient(read_jsonl(out))
    assert {c: r["codes"]["spring"] for c, r in records.items()} == stored
    pool = counts(engine, "spring")
    assert (pool.issued, pool.reserved, pool.available) == (len(ids), 0, codes - len(ids))
    assert lease_holder(engine, MAILING, "all") is None  # released at the end


# -- the lease itself ----------------------------------------------------------


def test_a_held_lease_refuses_another_holder_until_released(engine: Engine) -> None:
    first = acquire_lease(engine, MAILING, "all", scope=SCOPE)

    with pytest.raises(LeaseHeld) as refused:
        acquire_lease(engine, MAILING, "all", scope=SCOPE)
    assert refused.value.holder.pid == os.getpid()
    assert refused.value.holder.host == socket.gethostname()
    assert refused.value.holder.started_at == first.started_at
    message = str(refused.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert first.started_at.isoformat(sep=" ", timespec="seconds") in message
    # Another mailing is another lease.
    other = acquire_lease(engine, "m-other", "all", scope="m-other|all")
    assert other.holder != first.holder

    assert release_lease(engine, first)
    assert not release_lease(engine, first)  # only once
    again = acquire_lease(engine, MAILING, "all", scope=SCOPE)
    assert again.took_over is None and again.holder != first.holder


def test_send_runs_hold_leases_of_their_own_beside_the_renders(engine: Engine) -> None:
    render_all = acquire_lease(engine, MAILING, "all", scope=SCOPE)
    # A send of any shard runs while a render of the whole mailing does.
    send_half = acquire_lease(engine, MAILING, send_lease_label("1/2"), scope="s|send 1/2")
    other_half = acquire_lease(engine, MAILING, send_lease_label("2/2"), scope="s|send 2/2")
    with pytest.raises(LeaseHeld, match=r"shard 1/2 is already being sent by"):
        acquire_lease(engine, MAILING, send_lease_label("1/2"), scope="s|send 1/2")
    # A send that splits the mailing otherwise would send some of the same messages.
    with pytest.raises(LeaseHeld, match=r"shard [12]/2 is already being sent"):
        acquire_lease(engine, MAILING, send_lease_label("all"), scope="s|send all")
    # And a render of half the mailing is refused by the render, not by the sends.
    with pytest.raises(LeaseHeld, match=r"shard all is already being rendered"):
        acquire_lease(engine, MAILING, "1/2", scope=f"{MAILING}|1/2")
    for lease in (render_all, send_half, other_half):
        assert release_lease(engine, lease)
    send_all = acquire_lease(engine, MAILING, send_lease_label("all"), scope="s|send all")
    assert send_all.shard == "send|all"


def test_an_expired_lease_is_taken_over_and_its_old_holder_is_told(engine: Engine) -> None:
    pool_with_codes(engine, "spring", 10)
    old = acquire_lease(engine, MAILING, "all", scope=SCOPE, seconds=30)
    held = reserve(engine, "spring", 4, scope=SCOPE)
    assert counts(engine, "spring").reserved == 4
    with read_transaction(engine) as conn:
        now = store_now(conn)

    with pytest.raises(LeaseHeld):  # alive: 29 s from now it still is
        acquire_lease(engine, MAILING, "all", scope=SCOPE, now=now + timedelta(seconds=29))
    new = acquire_lease(engine, MAILING, "all", scope=SCOPE, now=now + timedelta(seconds=31))

    assert new.took_over is not None and new.took_over.pid == old.pid
    # Taking over freed what the old holder had reserved, in the same step.
    assert counts(engine, "spring").reserved == 0 and len(held.codes) == 4
    for attempt in (lambda: renew_lease(engine, old), lambda: check_lease(engine, old)):
        with pytest.raises(LeaseLost, match=f"taken over by pid {new.pid}"):
            attempt()
    assert not release_lease(engine, old)  # cannot end the new holder's lease
    renew_lease(engine, new)
    check_lease(engine, new)


def test_a_keeper_renews_and_reports_a_takeover(engine: Engine) -> None:
    lease = acquire_lease(engine, MAILING, "all", scope=SCOPE, seconds=0.3)
    lost = threading.Event()
    renewed_before = _expires_at(engine)

    with LeaseKeeper(engine, lease, lost.set) as keeper:
        wait_until(lambda: _expires_at(engine) > renewed_before, what="a renewal")
        with read_transaction(engine) as conn:
            later = store_now(conn) + timedelta(seconds=5)
        acquire_lease(engine, MAILING, "all", scope=SCOPE, now=later)
        assert lost.wait(30), "the keeper did not notice the takeover"
    assert isinstance(keeper.lost, LeaseLost)


def _expires_at(engine: Engine) -> datetime:
    holder = lease_holder(engine, MAILING, "all")
    assert holder is not None
    return holder.expires_at


def take_when_released(barrier: Any, url: str) -> str:
    """For run_together: open an engine, wait for the others, try the lease."""
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        barrier.wait()
        try:
            acquire_lease(engine, MAILING, "all", scope=SCOPE)
            answer = f"held:{os.getpid()}"
        except LeaseHeld as exc:
            answer = f"refused:{exc.holder.pid}"
        # Nobody exits before all have tried: a holder whose process is gone
        # would be taken over, rightly.
        barrier.wait()
        return answer
    finally:
        engine.dispose()


def test_of_runs_starting_at_the_same_moment_exactly_one_gets_the_lease(
    db_url: str, engine: Engine
) -> None:
    answers = run_together(take_when_released, [(db_url,)] * 4)

    held = [a for a in answers if a.startswith("held:")]
    assert len(held) == 1, answers
    winner = held[0].split(":")[1]
    assert sorted(a for a in answers if a != held[0]) == [f"refused:{winner}"] * 3


# -- runs of one mailing and shard ---------------------------------------------


def test_a_second_run_while_the_first_renders_is_refused_and_the_first_completes(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    template, recipients, ids = _setup(engine, tmp_path, 300, 320)
    first_out = tmp_path / "first.jsonl"

    with _running(
        _paced_cli(db_url, 0.02, *_render_args(template, recipients, first_out))
    ) as first:
        wait_until(
            lambda: first.poll() is not None or count_issuances(engine, MAILING) >= 40,
            what="the first run to issue codes",
        )
        assert first.poll() is None, "the first run ended too early"
        before = count_issuances(engine, MAILING)
        second = subprocess.run(
            promomail_command(
                db_url, *_render_args(template, recipients, tmp_path / "second.jsonl")
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        still_running = first.poll() is None
        _, stderr = first.communicate(timeout=300)

    assert second.returncode == 1, second.stderr
    assert stderr_is_clean_error(second.stderr), second.stderr
    error = second.stderr.strip().splitlines()[-1]
    assert f"mailing '{MAILING}' shard all is already being rendered by pid {first.pid}" in error
    assert f"on host {socket.gethostname()}, started 20" in error
    assert not (tmp_path / "second.jsonl").exists()
    assert still_running, "the refused run stopped the first one"
    assert count_issuances(engine, MAILING) > before  # the first went on rendering

    assert first.returncode == 0, stderr
    _check_complete(engine, first_out, ids, 320)
    assert show_mailing(engine, MAILING).status == "finished"


def _kill(child: subprocess.Popen[str], engine: Engine) -> set[str]:
    """Let the render issue codes and hold a reservation, then kill -9 it."""
    wait_until(
        lambda: (
            child.poll() is not None
            or (count_issuances(engine, MAILING) >= 40 and counts(engine, "spring").reserved > 0)
        ),
        what="the render to issue codes",
    )
    assert child.poll() is None, "the render ended before the kill"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    return set(mailing_codes(engine, MAILING, "spring").values())


def test_a_killed_run_elsewhere_is_taken_over_once_its_lease_expired(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    template, recipients, ids = _setup(engine, tmp_path, 300, 320)
    args = _render_args(template, recipients, tmp_path / "killed.jsonl", "--lease-seconds", "3")
    with _running(_paced_cli(db_url, 0.01, *args)) as killed:
        issued_before = _kill(killed, engine)
    before = mailing_codes(engine, MAILING, "spring")
    # As if it had run on another machine: its pid there cannot be looked at.
    with write_transaction(engine) as conn:
        conn.execute(text("UPDATE shard_leases SET host = 'far-away', node = 'far-away|x|1'"))
    held = counts(engine, "spring").reserved

    # Renewed a second ago at most, the lease still holds for a while.
    with pytest.raises(LeaseHeld, match=f"by pid {killed.pid} on host far-away"):
        acquire_lease(engine, MAILING, "all", scope=SCOPE)
    assert counts(engine, "spring").reserved == held > 0  # the refusal freed nothing
    wait_until(lambda: _lease_expired(engine), what="the killed run's lease to expire")
    out = tmp_path / "next.jsonl"
    done = subprocess.run(
        [*promomail_command(db_url, *_render_args(template, recipients, out)), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"Took over from the earlier run (pid {killed.pid} on host far-away" in done.stderr
    summary = json.loads(done.stdout)
    assert (summary["rendered"], summary["reused_codes"]) == (300, len(before))
    after = mailing_codes(engine, MAILING, "spring")
    assert {c: after[c] for c in before} == before and set(before.values()) == issued_before
    _check_complete(engine, out, ids, 320)


def _lease_expired(engine: Engine) -> bool:
    with read_transaction(engine) as conn:
        now = store_now(conn)
    return bool(_expires_at(engine) < now)


def test_a_killed_run_on_this_machine_is_taken_over_at_once(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    template, recipients, ids = _setup(engine, tmp_path, 300, 320)
    args = _render_args(template, recipients, tmp_path / "killed.jsonl")
    with _running(_paced_cli(db_url, 0.01, *args)) as killed:
        _kill(killed, engine)
    assert not _lease_expired(engine)  # a default lease lasts a minute
    out = tmp_path / "next.jsonl"

    done = subprocess.run(
        promomail_command(db_url, *_render_args(template, recipients, out)),
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"Took over from the earlier run (pid {killed.pid} on host" in done.stderr
    _check_complete(engine, out, ids, 320)


def test_a_run_whose_lease_is_taken_over_stops_without_settling(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    template, recipients, ids = _setup(engine, tmp_path, 400, 420)
    request = request_for(
        db_url, template, recipients, MAILING, tmp_path / "superseded.jsonl", chunk_size=10
    )
    at_takeover: list[int] = []
    taken: list[Lease] = []

    def take_over_after_the_first_chunk(_done: int) -> None:
        if taken:
            return
        # Another run, later, finds this run's lease expired (it seemed stalled).
        with read_transaction(engine) as conn:
            later = store_now(conn) + timedelta(minutes=5)
        taken.append(acquire_lease(engine, MAILING, "all", scope=SCOPE, now=later))
        at_takeover.append(count_issuances(engine, MAILING))

    with pytest.raises(LeaseLost, match="taken over by pid"):
        render_mailing(request, take_over_after_the_first_chunk)

    assert count_issuances(engine, MAILING) == at_takeover[0] < len(ids)
    check_invariants(engine, redemptions_possible=False)
    check_no_reservations(engine)  # it gave back everything it held
    assert not (tmp_path / "superseded.jsonl").exists()
    # The record of the run belongs to the run that took over: untouched.
    assert [r["status"] for r in show_mailing(engine, MAILING).runs] == ["running"]
    check_lease(engine, taken[0])

    release_lease(engine, taken[0])
    out = tmp_path / "after.jsonl"
    summary = render_mailing(request_for(db_url, template, recipients, MAILING, out, chunk_size=50))
    assert summary.ok and summary.totals.reused_codes == at_takeover[0]
    _check_complete(engine, out, ids, 420)


def test_shards_that_split_the_mailing_alike_run_side_by_side_and_others_wait(
    engine: Engine,
) -> None:
    half = acquire_lease(engine, MAILING, "1/2", scope=f"{MAILING}|1/2")
    other_half = acquire_lease(engine, MAILING, "2/2", scope=f"{MAILING}|2/2")

    for shard in ("all", "1/3"):
        with pytest.raises(LeaseHeld, match=r"shard [12]/2 is already being rendered") as refused:
            acquire_lease(engine, MAILING, shard, scope=f"{MAILING}|{shard}")
        assert refused.value.holder.pid == os.getpid()
    acquire_lease(engine, "another-mailing", "all", scope="another-mailing|all")

    release_lease(engine, half)
    release_lease(engine, other_half)
    acquire_lease(engine, MAILING, "all", scope=SCOPE)


def test_a_second_run_asked_to_wait_renders_after_the_first(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """``--wait``: never both fail; the second finds everyone served and reuses it all."""
    template, recipients, ids = _setup(engine, tmp_path, 200, 220)
    first_out, second_out = tmp_path / "first.jsonl", tmp_path / "second.jsonl"

    with _running(
        _paced_cli(db_url, 0.01, *_render_args(template, recipients, first_out))
    ) as first:
        wait_until(
            lambda: first.poll() is not None or count_issuances(engine, MAILING) >= 20,
            what="the first run to issue codes",
        )
        assert first.poll() is None, "the first run ended too early"
        second = subprocess.run(
            promomail_command(
                db_url,
                *_render_args(template, recipients, second_out, "--wait", "300", "--json"),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        first_done = first.poll()  # the second returned only once the first had ended

    assert first_done == 0, first.communicate()[1]
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert (summary["rendered"], summary["new_codes"], summary["reused_codes"]) == (200, 0, 200)
    _check_complete(engine, second_out, ids, 220)
    assert records_by_recipient(read_jsonl(first_out)) == records_by_recipient(
        read_jsonl(second_out)
    )


def test_a_run_with_workers_stops_when_its_lease_is_taken_over(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    template, recipients, ids = _setup(engine, tmp_path, 400, 420)
    args = _render_args(template, recipients, tmp_path / "taken.jsonl", "--workers", "2")

    with _running(_paced_cli(db_url, 0.02, *args)) as taken:
        wait_until(
            lambda: taken.poll() is not None or count_issuances(engine, MAILING) >= 40,
            what="the render to issue codes",
        )
        assert taken.poll() is None, "the render ended too early"
        with read_transaction(engine) as conn:
            later = store_now(conn) + timedelta(minutes=5)
        successor = acquire_lease(engine, MAILING, "all", scope=SCOPE, now=later)
        at_takeover = count_issuances(engine, MAILING)
        _, stderr = taken.communicate(timeout=300)

    assert taken.returncode == 1, stderr
    assert stderr_is_clean_error(stderr), stderr
    assert f"this run's lease was taken over by pid {os.getpid()}" in stderr.splitlines()[-1]
    assert count_issuances(engine, MAILING) == at_takeover < len(ids)
    check_invariants(engine, redemptions_possible=False)
    check_no_reservations(engine)
    assert not (tmp_path / "taken.jsonl").exists()
    check_lease(engine, successor)


def test_a_refused_run_changes_nothing(db_url: str, engine: Engine, tmp_path: Path) -> None:
    template, recipients, _ = _setup(engine, tmp_path, 50, 60)
    render_mailing(request_for(db_url, template, recipients, MAILING, tmp_path / "done.jsonl"))
    pool_reserved = reserve(engine, "spring", 3, scope=SCOPE)  # as a run in progress holds
    running = acquire_lease(engine, MAILING, "all", scope="elsewhere")
    before = full_snapshot(engine)
    out = tmp_path / "refused" / "out.jsonl"

    refused = subprocess.run(
        promomail_command(db_url, *_render_args(template, recipients, out)),
        capture_output=True,
        text=True,
        check=False,
    )

    assert refused.returncode == 1 and stderr_is_clean_error(refused.stderr), refused.stderr
    assert f"by pid {running.pid} on host {running.host}" in refused.stderr
    assert full_snapshot(engine) == before  # its reservations untouched, no run recorded
    assert not out.parent.exists()
    assert len(pool_reserved.codes) == counts(engine, "spring").reserved == 3
