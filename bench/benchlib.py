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
from contextlib import contextmanager
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
        yield f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}"
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


def postgres_cpu_seconds() -> float:
    """CPU used so far by this machine's PostgreSQL server: every postgres process,
    and the backends that have exited (reaped by the postmaster: its children's time)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        command, _, rest = text.partition(" (")[2].rpartition(")")
        if not command.startswith("postgres"):
            continue
        fields = rest.split()
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


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
        self.stat: Path | None = None
        if is_postgres(engine):
            with engine.connect() as conn:
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            stat = Path(f"/proc/{pid}/stat")
            self.stat = stat if stat.exists() else None
        self.server = is_postgres(engine) and self.stat is not None

    def now(self) -> float:
        server = 0.0
        if self.stat is not None:
            fields = self.stat.read_text().rsplit(")", 1)[1].split()
            server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
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
