"""Redemptions over HTTP: ``POST /api/v1/redemptions`` against a real ``promomail serve``.

    python bench/api.py                              # SQLite and PostgreSQL, 1/8/32 clients
    python bench/api.py --db postgresql --requests 4000 --clients 32
    python bench/api.py --db postgresql --servers 2   # two serve processes, one store

For each database a fresh store gets an active single-use pool with a code
for every redemption to come, and a ``redeem`` token; one ``promomail
serve`` process runs on it (port 0), or ``--servers`` of them sharing the
store (clients are dealt out to them in turn). Then, for each number of concurrent
clients, the same server answers ``GET /healthz`` (the trivial route: no
token, one ``SELECT 1``) and ``POST /api/v1/redemptions`` (a different code
and order each time), ``--requests`` of each. Clients are keep-alive httpx
connections, spread over up to four client processes so that the client
side is not the bottleneck; each client sends its next request as soon as
the last is answered.

The table shows requests per second, p50 and p99 latency, errors, and the
redemption rate relative to the trivial route at the same concurrency.
Afterwards the store is checked: every 201 is one redemption, no code was
redeemed twice, and the count of redemptions equals the count of 201s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import fresh_store, parse_databases, print_table, scratch_folder
from sqlalchemy import text

from pools.admin.lifecycle import PoolSettings, create_pool
from pools.admin.tokens import Scope, create_token
from pools.codes.files import FileFormat
from pools.codes.imports import Upload, upload_codes
from pools.store.db import StoreConfig, open_engine

PROMOMAIL = str(Path(sys.executable).with_name("promomail"))
CLIENT_PROCESSES = 4


@dataclass(frozen=True)
class Run:
    route: str
    clients: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _start_server(url: str) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [PROMOMAIL, "--db", url, "serve", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
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


async def _client_loop(
    base: str, token: str, route: str, jobs: list[int], prefix: str
) -> tuple[list[float], int, dict[int, int]]:
    import httpx

    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    expected = 201 if route == "redeem" else 200
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=60, limits=httpx.Limits(max_connections=1)
    ) as client:
        await client.get("/healthz")  # connected before the clock starts
        for number in jobs:
            started = time.perf_counter()
            try:
                if route == "redeem":
                    body = {"code": f"{prefix}{number:08d}", "order": f"order-{prefix}{number}"}
                    answer = await client.post("/api/v1/redemptions", json=body)
                else:
                    answer = await client.get("/healthz")
                status = answer.status_code
            except httpx.HTTPError:
                status = 0
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if status != expected:
                errors += 1
    return latencies, errors, statuses


def _client_process(
    bases: list[str],
    token: str,
    route: str,
    job_lists: list[list[int]],
    prefix: str,
    barrier: Any,
    queue: Any,
) -> None:
    async def main() -> list[tuple[list[float], int, dict[int, int]]]:
        loops = [
            _client_loop(
                bases[jobs[0] % len(bases)] if jobs else bases[0], token, route, jobs, prefix
            )
            for jobs in job_lists
        ]
        barrier.wait()
        return await asyncio.gather(*loops)

    queue.put(asyncio.run(main()))


def run_level(
    bases: list[str], token: str, route: str, clients: int, requests: int, prefix: str
) -> Run:
    """``requests`` requests from ``clients`` keep-alive clients at once."""
    context = multiprocessing.get_context("spawn")
    processes = min(clients, CLIENT_PROCESSES)
    per_client = [list(range(i, requests, clients)) for i in range(clients)]
    groups = [per_client[p::processes] for p in range(processes)]
    barrier = context.Barrier(processes + 1)
    queue = context.Queue()
    workers = [
        context.Process(
            target=_client_process, args=(bases, token, route, group, prefix, barrier, queue)
        )
        for group in groups
    ]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    answers = [queue.get() for _ in workers]
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.join()
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    for per_process in answers:
        for lat, err, stat in per_process:
            latencies.extend(lat)
            errors += err
            for key, count in stat.items():
                statuses[key] = statuses.get(key, 0) + count
    return Run(route, clients, requests, seconds, latencies, errors, statuses)


def bench_database(
    database: str, folder: Path, levels: list[int], requests: int, servers: int
) -> list[tuple[str, Run]]:
    with fresh_store(database, folder) as url:
        engine = open_engine(StoreConfig(url))
        try:
            create_pool(
                engine,
                PoolSettings("Bench", description="benchmark"),
                pool_id="bench",
                activate=True,
            )
            total = requests * len(levels)
            codes = "".join(
                f"L{level}-{n:08d}\n" for level in levels for n in range(requests)
            ).encode()
            upload_codes(
                engine, "bench", [Upload("bench.txt", FileFormat.TXT, stream=io.BytesIO(codes))]
            )
            token = create_token(engine, "bench", Scope.REDEEM).token
            started = [_start_server(url) for _ in range(servers)]
            bases = [base for _, base in started]
            runs: list[tuple[str, Run]] = []
            try:
                for level in levels:
                    trivial = run_level(bases, token, "healthz", level, requests, "")
                    redeem = run_level(bases, token, "redeem", level, requests, f"L{level}-")
                    runs += [(database, trivial), (database, redeem)]
                    print(
                        f"  {database}: {level} clients: healthz {trivial.rate:,.0f}/s, "
                        f"redeem {redeem.rate:,.0f}/s",
                        file=sys.stderr,
                    )
            finally:
                for server, _ in started:
                    server.send_signal(signal.SIGTERM)
                for server, _ in started:
                    status = server.wait(60)
                    if status != 0:
                        print(f"  promomail serve exited {status}", file=sys.stderr)
            created = sum(r.statuses.get(201, 0) for _, r in runs if r.route == "redeem")
            with engine.connect() as conn:
                recorded, distinct = conn.execute(
                    text("SELECT count(*), count(DISTINCT code_id) FROM redemptions")
                ).one()
            doubles = recorded - distinct
            print(
                f"  {database}: {created:,} redemptions answered 201, {recorded:,} recorded, "
                f"{doubles} codes redeemed twice (of {total:,} codes)",
                file=sys.stderr,
            )
            if recorded != created or doubles:
                raise SystemExit(f"{database}: redemptions do not add up")
            return runs
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=3000, help="requests per route and level")
    parser.add_argument("--servers", type=int, default=1, help="serve processes on the store")
    args = parser.parse_args()
    levels = [int(part) for part in args.clients.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    rows: list[list[object]] = []
    with scratch_folder() as folder:
        for database in parse_databases(args.db):
            runs = bench_database(database, folder, levels, args.requests, args.servers)
            trivial = {r.clients: r for _, r in runs if r.route == "healthz"}
            for db, run in runs:
                ratio = run.rate / trivial[run.clients].rate if run.route == "redeem" else 1.0
                rows.append(
                    [
                        db,
                        "POST /api/v1/redemptions" if run.route == "redeem" else "GET /healthz",
                        run.clients,
                        round(run.rate),
                        run.percentile(0.5),
                        run.percentile(0.99),
                        run.errors,
                        ratio,
                    ]
                )
    print_table(
        ["database", "route", "clients", "req/s", "p50 ms", "p99 ms", "errors", "vs healthz"],
        rows,
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
