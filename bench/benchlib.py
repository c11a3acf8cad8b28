"""What the benchmark scripts share: throw-away stores, child processes, tables.

Each measured step runs in a fresh spawned process, so its peak memory
(``ru_maxrss``) is its own and not that of whatever ran before it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, text

from promomail.pools.store.db import StoreConfig, is_postgres

#: The ``promomail`` command of this interpreter's environment.
PROMOMAIL = str(Path(sys.executable).with_name("promomail"))

PG_URL = os.environ.get("PROMOMAIL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
DATABASES = ("sqlite", "postgresql")


@contextmanager
def fresh_store(database: str, folder: Path) -> Iterator[str]:
    """A URL to an empty store: a new SQLite file, or a new PostgreSQL schema (dropped after)."""
    if database == "sqlite":
        path = folder / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(StoreConfig(PG_URL).sqlalchemy_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in PG_URL else "?"
    try:
        # The schema's name is also its connections' application name, which
        # tells them from other sessions of the server (see PostgresCpu).
        options = quote(f"-csearch_path={schema}")
        yield f"{PG_URL}{separator}options={options}&application_name={schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def scratch_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="promomail-bench-") as folder:
        yield Path(folder)


@dataclass(frozen=True)
class Measured:
    seconds: float
    #: Peak resident memory of the child before the measured work (imports, set-up).
    base_rss_mb: float
    #: Peak resident memory of the child at the end.
    peak_rss_mb: float
    result: Any


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(queue: Any, work: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        base = _peak_rss_mb()
        started = time.perf_counter()
        result = work(*args)
        seconds = time.perf_counter() - started
        queue.put(("ok", Measured(seconds, base, _peak_rss_mb(), result)))
    except BaseException as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


def measure_in_child(work: Callable[..., Any], *args: Any) -> Measured:
    """Run ``work(*args)`` in a spawned process; its time and peak memory."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, work, args))
    process.start()
    status, answer = queue.get()
    process.join()
    if status != "ok":
        raise SystemExit(f"benchmark step failed: {answer}")
    assert isinstance(answer, Measured)
    return answer


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU a live process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); 11 and 12 after the command.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def released_together(
    target: Callable[..., None], arguments: Sequence[tuple[Any, ...]]
) -> tuple[list[Any], float]:
    """One spawned process per ``arguments`` running ``target(*args, barrier, queue)``,
    released at once: what each put on the queue, and the seconds from the
    release to the last answer (start-up is not counted)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(arguments) + 1)
    queue = context.Queue()
    workers = [context.Process(target=target, args=(*args, barrier, queue)) for args in arguments]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    answers = [queue.get() for _ in workers]
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.join()
    return answers, seconds


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Text left, numbers right."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [bool(rows) and isinstance(rows[0][i], int | float) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if right else c.ljust(w)
                for c, w, right in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def parse_databases(value: str) -> list[str]:
    chosen = [d.strip() for d in value.split(",") if d.strip()]
    unknown = set(chosen) - set(DATABASES)
    if unknown or not chosen:
        raise SystemExit(f"--db takes a comma-separated list of {', '.join(DATABASES)}")
    return chosen


class CpuMeter:
    """CPU seconds of this process plus, for a local PostgreSQL, of the server
    process behind the engine's one connection (from /proc).

    On a machine shared with other jobs, wall time swings with their load;
    the CPU spent for the work does much less.
    """

    def __init__(self, engine: Engine) -> None:
        self.backend: int | None = None
        if is_postgres(engine):
            with engine.connect() as conn:
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            self.backend = pid if Path(f"/proc/{pid}/stat").exists() else None
        self.server = self.backend is not None

    def now(self) -> float:
        server = process_cpu_seconds(self.backend) if self.backend is not None else 0.0
        return time.process_time() + server


def start_server(
    url: str, *options: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A ``promomail serve`` on ``url`` on a free port, and its base URL once it listens."""
    process = subprocess.Popen(
        [PROMOMAIL, "--db", url, "serve", "--port", "0", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stderr is not None
    line = process.stderr.readline().decode()
    found = re.search(r"listening on (http://\S+)", line)
    if not found:
        process.kill()
        raise SystemExit(f"promomail serve did not start: {line}")
    # Keep reading its stderr so the pipe never fills up.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process, found.group(1)


_CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class TreeCpu:
    """CPU seconds of this process and of every process it starts from now on,
    waited for or not (forkserver, workers, store helpers, their children).

    Where cgroup v1's ``cpuacct`` controller is writable, this process moves
    into a cgroup of its own (every child it starts inherits it) and the
    figure is the cgroup's ``cpuacct.usage``; :meth:`close` moves it back and
    removes the cgroup. Elsewhere it falls back to ``RUSAGE_SELF`` plus
    ``RUSAGE_CHILDREN``, which counts only the children waited for
    (``how`` says which).
    """

    def __init__(self) -> None:
        self.group: Path | None = None
        self.home: Path | None = None
        #: How the figure is counted.
        self.how = "rusage self+children"
        try:
            home = _own_cpuacct_group()
            group = _CPUACCT / f"promomail-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            group.mkdir()
        except OSError:
            return
        try:
            (group / "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError:
            group.rmdir()
            return
        self.group, self.home = group, home
        self.how = "cgroup cpuacct"

    def seconds(self) -> float:
        if self.group is not None:
            return int((self.group / "cpuacct.usage").read_text()) / 1e9
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def others(self) -> list[int]:
        """The processes of the cgroup but this one (still running, or not yet reaped)."""
        if self.group is None:
            return []
        pids = (self.group / "cgroup.procs").read_text().split()
        return [int(p) for p in pids if int(p) != os.getpid()]

    def wait_alone(self, timeout: float = 30.0) -> list[int]:
        """Wait until every process started since is gone; those still there at the timeout."""
        deadline = time.monotonic() + timeout
        while (left := self.others()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return left

    def close(self) -> None:
        if self.group is None or self.home is None:
            return
        (self.home / "cgroup.procs").write_text(f"{os.getpid()}\n")
        # A child just reaped may still be listed for a moment.
        for _attempt in range(50):
            try:
                self.group.rmdir()
                break
            except OSError:
                time.sleep(0.02)
        self.group = None


def _own_cpuacct_group() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            return _CPUACCT / path.lstrip("/")
    raise OSError("no cpuacct cgroup v1 hierarchy")


def application_name(url: str) -> str | None:
    """The ``application_name`` a PostgreSQL URL of :func:`fresh_store` gives its sessions."""
    found = re.search(r"[?&]application_name=([^&]+)", url)
    return found.group(1) if found else None


# Runs outside the measured cgroups: moves each backend of the named
# application into the cgroup as soon as it shows up in pg_stat_activity.
_BACKEND_MOVER = """
import sys, time, psycopg
url, name, procs = sys.argv[1:4]
moved = set()
with psycopg.connect(url, autocommit=True) as conn:
    print("ready", flush=True)
    while True:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchall()
        for (pid,) in rows:
            if pid not in moved:
                moved.add(pid)
                try:
                    with open(procs, "w") as handle:
                        handle.write(f"{pid}\\n")
                except OSError:
                    pass
        time.sleep(0.005)
"""


class PostgresCpu:
    """CPU seconds of the PostgreSQL backends that serve one application name
    (the sessions of one :func:`fresh_store` schema), other sessions of the
    server left out.

    Where cgroup v1's ``cpuacct`` is writable, a process outside the measured
    cgroups watches ``pg_stat_activity`` and moves each such backend into a
    cgroup of its own within milliseconds of its start (the connection's
    first milliseconds go uncounted); the figure is that cgroup's usage,
    backends that have ended included. Elsewhere it falls back to the whole
    server from ``/proc``: every postgres process's own CPU plus what the
    postmaster reaped (``how`` says which).
    """

    def __init__(self, url: str) -> None:
        self.group: Path | None = None
        self.mover: subprocess.Popen[str] | None = None
        self.how = "the whole server, from /proc"
        self.usage: float | None = None
        name = application_name(url)
        if name is None:
            return
        try:
            group = _CPUACCT / f"promomail-bench-pg-{name}"
            group.mkdir()
        except OSError:
            return
        self.mover = subprocess.Popen(
            [sys.executable, "-c", _BACKEND_MOVER, PG_URL, name, str(group / "cgroup.procs")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.mover.stdout is not None
        if self.mover.stdout.readline().strip() != "ready":
            self.mover.kill()
            self.mover.wait()
            group.rmdir()
            self.mover = None
            return
        self.group = group
        self.how = "its backends, in a cgroup"

    def seconds(self) -> float:
        if self.usage is not None:
            return self.usage
        if self.group is not None:
            return int((self.group / "cpuacct.usage").read_text()) / 1e9
        return postgres_server_seconds()

    def close(self, timeout: float = 10.0, *, keep_reading: bool = False) -> None:
        """Stop watching; once the backends have ended (or the timeout), remove the
        cgroup. With ``keep_reading``, :meth:`seconds` answers its last figure after."""
        if self.mover is not None:
            self.mover.kill()
            self.mover.wait()
            self.mover = None
        if self.group is None:
            return
        procs = self.group / "cgroup.procs"
        deadline = time.monotonic() + timeout
        while (left := procs.read_text().split()) and time.monotonic() < deadline:
            time.sleep(0.02)
        if keep_reading:
            self.usage = int((self.group / "cpuacct.usage").read_text()) / 1e9
        for pid in left:
            with suppress(OSError):
                (_CPUACCT / "cgroup.procs").write_text(f"{pid}\n")
        with suppress(OSError):
            self.group.rmdir()
        self.group = None


def postgres_server_seconds() -> float:
    """CPU seconds of every local PostgreSQL server process so far: each running
    one's own, plus what the postmaster reaped (backends that have ended).

    Counts the whole server, other databases' sessions included: on a shared
    machine take it as an upper bound.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        name, rest = raw.split(" (", 1)[1].rsplit(") ", 1)
        if name != "postgres":
            continue
        fields = rest.split()  # fields[0] is the state, field 3 of the line
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if _is_postmaster(int(fields[1])):
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped backends
    return total / tick


def _is_postmaster(parent_pid: int) -> bool:
    """The server's first process: its parent is no postgres process."""
    try:
        parent = Path(f"/proc/{parent_pid}/comm").read_text().strip()
    except OSError:
        return True
    return parent != "postgres"
