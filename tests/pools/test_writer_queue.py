"""SQLite's writer slot, queued for by the threads of one process in arrival order."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from promomail.pools.errors import StoreError
from promomail.pools.store import db
from promomail.pools.store.db import StoreConfig, open_engine, write_transaction
from promomail.pools.store.writer_queue import WriterQueue


def _wait_until(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@settings(max_examples=15, deadline=None)
@given(waiters=st.integers(min_value=1, max_value=12))
def test_the_slot_goes_to_waiters_in_arrival_order(waiters: int) -> None:
    queue = WriterQueue()
    assert queue.acquire(1)
    served: list[int] = []

    def wait(n: int) -> None:
        assert queue.acquire(10)
        served.append(n)
        queue.release()

    threads = []
    for n in range(waiters):
        thread = threading.Thread(target=wait, args=(n,))
        thread.start()
        threads.append(thread)
        _wait_until(lambda n=n: queue.waiting == n + 1)  # n + 1 queued, in this order
    queue.release()
    for thread in threads:
        thread.join(10)
    assert served == list(range(waiters))
    assert queue.acquire(0.01)  # free again once everyone is through


def test_one_holder_at_a_time_under_contention() -> None:
    queue = WriterQueue()
    inside = 0
    most = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        for _ in range(200):
            assert queue.acquire(10)
            with lock:
                inside += 1
                most = max(most, inside)
            with lock:
                inside -= 1
            queue.release()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert most == 1


def test_a_waiter_that_gives_up_leaves_the_queue() -> None:
    queue = WriterQueue()
    assert queue.acquire(1)
    assert not queue.acquire(0.05)
    assert queue.waiting == 0
    queue.release()
    assert queue.acquire(0.01)  # the slot was freed, not handed to the one that left


def test_sqlite_writers_of_one_process_queue_and_none_is_lost(tmp_path: Path) -> None:
    engine = open_engine(StoreConfig(f"sqlite:///{tmp_path / 'q.db'}"))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE tally (n INTEGER)"))
        conn.execute(text("INSERT INTO tally VALUES (0)"))

    def add() -> None:
        for _ in range(50):
            with write_transaction(engine) as conn:
                n = conn.execute(text("SELECT n FROM tally")).scalar_one()
                conn.execute(text("UPDATE tally SET n = :n"), {"n": n + 1})

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM tally")).scalar_one() == 400
    engine.dispose()


def test_a_writer_kept_waiting_too_long_gets_the_stores_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    engine = open_engine(StoreConfig(f"sqlite:///{tmp_path / 'q.db'}"))
    refused: list[BaseException] = []
    holding = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with write_transaction(engine):
            holding.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        with (
            pytest.raises(StoreError, match="locked by another writer"),
            write_transaction(engine),
        ):
            refused.append(AssertionError("got the slot while another thread held it"))
    finally:
        done.set()
        holder.join(10)
    assert not refused
    engine.dispose()


def test_a_second_writer_waits_in_the_queue_not_on_sqlite(tmp_path: Path) -> None:
    engine = open_engine(StoreConfig(f"sqlite:///{tmp_path / 'q.db'}"))
    holding = threading.Event()
    done = threading.Event()
    wrote = threading.Event()

    def hold() -> None:
        with write_transaction(engine):
            holding.set()
            done.wait(10)

    def write() -> None:
        with write_transaction(engine):
            wrote.set()

    threads = [threading.Thread(target=hold), threading.Thread(target=write)]
    threads[0].start()
    holding.wait(10)
    threads[1].start()
    queue = db._WRITER_QUEUES[engine.pool]
    _wait_until(lambda: queue.waiting == 1)
    assert not wrote.is_set()
    done.set()
    for thread in threads:
        thread.join(10)
    assert wrote.is_set()
    engine.dispose()
