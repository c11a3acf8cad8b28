"""Template processes: a job that outruns its time is killed, its process replaced."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from promomail.pools.errors import DatabaseFailure, PromomailError
from promomail.pools.store.db import StoreConfig, open_engine
from promomail.templating.errors import InvalidTemplate
from promomail.templating.mailing.isolated import TemplateJobFailed, TemplateProcesses


def _pid(_engine: Engine) -> int:
    return os.getpid()


def _main_thread(_engine: Engine) -> bool:
    # Where the render's timer (SIGALRM) works.
    return threading.current_thread() is threading.main_thread()


def _sleep(_engine: Engine, seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def _refuse(_engine: Engine) -> None:
    raise InvalidTemplate("bad", template="t.j2", line=3)


def _store_fails(_engine: Engine) -> None:
    raise DatabaseFailure("the store at somewhere refused: no such table: pools")


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM pools")).scalar_one())


def _wait_ended(pid: int) -> None:
    """Until ``pid`` is dead (a zombie its parent has not reaped yet counts)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state in ("Z", "X"):
            return
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_engine(StoreConfig(url)).dispose()  # migrated
    return url


def test_a_job_that_outruns_its_time_is_killed_and_its_process_replaced(url: str) -> None:
    processes = TemplateProcesses(url, size=1, job_seconds=1.0)
    try:
        first = processes.run(_pid)
        assert first != os.getpid()
        assert processes.run(_main_thread) is True
        assert processes.run(_count) == 0  # its own engine on the store
        with pytest.raises(TemplateJobFailed, match="longer than 1 s"):
            processes.run(_sleep, 600)
        assert not _alive(first)
        second = processes.run(_pid)
        assert second != first
        assert processes.run(_sleep, 0) == "woke"
        assert processes.run(_pid) == second  # reused while it behaves
        os.kill(second, signal.SIGKILL)  # ended from outside while idle
        _wait_ended(second)
        third = processes.run(_pid)
        assert third != second
        second = third
        assert processes.run(_sleep, 0) == "woke"
    finally:
        processes.close()
    assert not _alive(second)


def test_what_a_job_raises_comes_back(url: str) -> None:
    processes = TemplateProcesses(url, size=1)
    try:
        with pytest.raises(PromomailError, match=r"t\.j2, line 3: bad"):
            processes.run(_refuse)
        with pytest.raises(DatabaseFailure, match="no such table: pools"):
            processes.run(_store_fails)
        assert processes.run(_sleep, 0) == "woke"
    finally:
        processes.close()


def test_no_more_jobs_run_than_processes(url: str) -> None:
    processes = TemplateProcesses(url, size=2)
    pids: list[int] = []
    try:
        threads = [
            threading.Thread(target=lambda: pids.append(processes.run(_pid))) for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(pids) == 6
        assert len(set(pids)) <= 2
    finally:
        processes.close()
    assert not any(_alive(pid) for pid in set(pids))
