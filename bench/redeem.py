"""Redemption speed of the library calls: redemptions/s and the latency of one call.

    python bench/redeem.py                          # SQLite file and PostgreSQL
    python bench/redeem.py --count 5000 --db sqlite

For each database a fresh store (a new SQLite file, or a new PostgreSQL
schema) gets a single-use pool whose codes were all issued by one mailing,
as at a real checkout (the redemption then attributes customer and mailing).
Then ``redeem()`` runs one call per code, each with an order of its own:

* 1 process: ``--count`` redemptions one after the other;
* 8 processes: ``--count`` redemptions each, on disjoint codes, all released
  at the same moment (the rate is all redemptions over the wall time from
  the release to the last one done);
* replays: the single process's codes again with their orders (a retried
  checkout answered from the redemption it already made);
* hold-then-redeem pairs: a checkout that holds each code for its order
  (``hold_code()``) and then redeems it with that order, in 1 process and in
  8 on disjoint codes; the rate counts pairs, and the hold and the
  redemption each get their p50/p99.

p50/p99 are the latency of one call as its caller sees it, lock waits
included. Set-up (the pool, the issuing) is outside the timing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from contextlib import ExitStack
from typing import Any

from benchlib import fresh_store, parse_databases, print_table, scratch_folder
from sqlalchemy import Engine, insert, text

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.clock import utcnow
from promomail.pools.store.code_loading import insert_codes
from promomail.pools.store.db import StoreConfig, is_postgres, open_engine, write_transaction
from promomail.pools.store.models import ImportBatch

PROCESSES = 8
_CLAIM_BATCH = 1_000


def prepare(engine: Engine, count: int) -> list[str]:
    """A pool of ``count`` codes, all issued by mailing "bench-mail"; the codes in order."""
    create_pool(engine, PoolSettings("Bench", description="benchmark"), activate=True)
    codes = [f"R{i:09d}" for i in range(count)]
    with write_transaction(engine) as conn:
        batch = conn.execute(
            insert(ImportBatch)
            .values(pool_id="bench", source="bench", format="generated", created_at=utcnow())
            .returning(ImportBatch.id)
        ).scalar_one()
        insert_codes(conn, "bench", batch, plain=codes)
    for start in range(0, count, _CLAIM_BATCH):
        customers = [f"c{i}" for i in range(start, min(start + _CLAIM_BATCH, count))]
        claim(engine, "bench", "bench-mail", customers)
    if is_postgres(engine):
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return codes


def _redeem_all(
    url: str, codes: list[str], barrier: Any | None, pairs: bool
) -> tuple[dict[str, list[float]], float]:
    """Redeem each code with an order of its own, holding it first when ``pairs``.

    Returns the latencies of each kind of call, and the time the first call started.
    """
    from promomail.pools.after_sending.holds import hold_code
    from promomail.pools.after_sending.redemption import redeem

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        with engine.connect() as conn:  # a pooled connection ready before the start
            conn.execute(text("SELECT 1"))
        if barrier is not None:
            barrier.wait()
        started = time.perf_counter()
        latencies: dict[str, list[float]] = {"hold": [], "redeem": []}
        for code in codes:
            order = f"order-{code}"
            if pairs:
                before = time.perf_counter()
                held = hold_code(engine, code, order=order, customer="buyer")
                latencies["hold"].append(time.perf_counter() - before)
                if not held.ok:
                    raise SystemExit(f"hold of {code} refused: {held.reason}")
            before = time.perf_counter()
            result = redeem(engine, code, customer="buyer", order=order)
            latencies["redeem"].append(time.perf_counter() - before)
            if not result.ok:
                raise SystemExit(f"redemption of {code} refused: {result.reason}")
        return latencies, started
    finally:
        engine.dispose()


def _worker(queue: Any, url: str, codes: list[str], barrier: Any, pairs: bool) -> None:
    try:
        latencies, started = _redeem_all(url, codes, barrier, pairs)
        queue.put(("ok", latencies, started, time.perf_counter()))
    except BaseException as exc:
        barrier.abort()
        queue.put(("error", f"{type(exc).__name__}: {exc}", 0.0, 0.0))
        raise


def in_processes(
    url: str, slices: list[list[str]], *, pairs: bool = False
) -> tuple[float, dict[str, list[float]]]:
    """Redeem each slice in a process of its own, released together: (seconds, latencies)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(slices), timeout=300)
    queue = context.Queue()
    processes = [
        context.Process(target=_worker, args=(queue, url, codes, barrier, pairs))
        for codes in slices
    ]
    for process in processes:
        process.start()
    answers = [queue.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join()
    failed = [a[1] for a in answers if a[0] != "ok"]
    if failed:
        raise SystemExit(f"a redeeming process failed: {failed[0]}")
    # perf_counter is system-wide on Linux (CLOCK_MONOTONIC): comparable across processes.
    seconds = max(a[3] for a in answers) - min(a[2] for a in answers)
    merged: dict[str, list[float]] = {"hold": [], "redeem": []}
    for answer in answers:
        for kind, values in answer[1].items():
            merged[kind].extend(values)
    return seconds, merged


def _row(database: str, mode: str, seconds: float, latencies: list[float]) -> list[object]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return [
        database,
        mode,
        len(latencies),
        len(latencies) / seconds,
        statistics.median(ordered) * 1000,
        p99 * 1000,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2_000, help="redemptions per process")
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite,postgresql")
    args = parser.parse_args()
    rows: list[list[object]] = []
    with ExitStack() as stack:
        folder = stack.enter_context(scratch_folder())
        for database in parse_databases(args.db):
            url = stack.enter_context(fresh_store(database, folder))
            engine = open_engine(StoreConfig(url))
            try:
                # Half for plain redemptions, half for hold-then-redeem pairs.
                codes = prepare(engine, 2 * args.count * (PROCESSES + 1))
            finally:
                engine.dispose()
            plain, paired = codes[: len(codes) // 2], codes[len(codes) // 2 :]
            single = plain[: args.count]
            seconds, latencies = in_processes(url, [single])
            rows.append(_row(database, "1 process", seconds, latencies["redeem"]))
            rest = plain[args.count :]
            slices = [rest[i::PROCESSES] for i in range(PROCESSES)]
            seconds, latencies = in_processes(url, slices)
            rows.append(_row(database, f"{PROCESSES} processes", seconds, latencies["redeem"]))
            seconds, latencies = in_processes(url, [single])  # the same orders again
            rows.append(_row(database, "replays, 1 process", seconds, latencies["redeem"]))
            rest = paired[args.count :]
            for label, pair_slices in (
                ("1 process", [paired[: args.count]]),
                (f"{PROCESSES} processes", [rest[i::PROCESSES] for i in range(PROCESSES)]),
            ):
                seconds, latencies = in_processes(url, pair_slices, pairs=True)
                for kind in ("hold", "redeem"):
                    run = f"pairs, {label}: {kind}"
                    rows.append(_row(database, run, seconds, latencies[kind]))
    # For pairs, "calls/s" counts whole pairs (a hold and a redemption).
    print_table(["database", "run", "calls", "calls/s", "p50 ms", "p99 ms"], rows)


if __name__ == "__main__":
    main()
