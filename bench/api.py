"""The checkout over HTTP (check, hold, redeem, roll back) against a real ``promomail serve``.

    python bench/api.py                              # SQLite and PostgreSQL, 1/8/32 clients
    python bench/api.py --db postgresql --requests 4000 --clients 32
    python bench/api.py --db postgresql --servers 2   # two serve processes, one store
    python bench/api.py --preview-storm 8             # redemptions beside 8 slow previews

For each database a fresh store gets an active single-use pool with a code
for every redemption to come, and a ``redeem`` token; one ``promomail
serve`` process runs on it (port 0), or ``--servers`` of them sharing the
store (clients are dealt out to them in turn). Then, for each number of concurrent
clients, the same server answers ``GET /healthz`` (the trivial route: no
token, one ``SELECT 1``), then the checkout's routes, ``--requests`` of
each: ``GET /api/v1/codes/{code}`` (a check), ``POST /api/v1/holds`` (a
hold on a code of its own), ``POST /api/v1/redemptions`` (each checked code
redeemed by its order) and ``POST /api/v1/redemptions/rollback`` (each
redemption undone). Clients are keep-alive httpx
connections, spread over up to four client processes so that the client
side is not the bottleneck; each client sends its next request as soon as
the last is answered.

The table shows requests per second, p50 and p99 latency, errors, the
rate relative to the trivial route at the same concurrency, and the CPU
each request cost the serve processes and (on PostgreSQL) the database
server: CPU is steadier than rates on a busy machine, and says where a
route's cost lies.
Afterwards the store is checked: every 201 is one redemption, no code was
redeemed twice, and every redemption but those rolled back is live.

``--preview-storm N`` runs the redemptions of each level a second time
while N clients keep asking the preview page for a slow template (one that
only the render's time limit stops), each asking again as soon as it is
answered: the rows "(N slow previews)" beside the quiet ones show what
template authors cost the checkout, in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import (
    fresh_store,
    parse_databases,
    postgres_server_seconds,
    print_table,
    process_cpu_seconds,
    released_together,
    scratch_folder,
    start_server,
)
from sqlalchemy import text

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.admin.tokens import create_token
from promomail.pools.choices import FileFormat, Scope
from promomail.pools.codes.imports import Upload, upload_codes
from promomail.pools.store.db import StoreConfig, open_engine

CLIENT_PROCESSES = 4
#: A template only the render's time limit stops: comparing two long texts
#: costs no unit of the work budget.
SLOW_TEMPLATE = (
    "{% set s = 'x' * 100000 %}{% set a = s ~ s ~ s ~ s ~ 'a' %}{% set b = s ~ s ~ s ~ s ~ 'b' %}"
    "{% for i in range(10000) %}{% for j in range(10000) if a > b %}{% endfor %}{% endfor %}done"
)
#: Seconds the storm runs before the redemptions start (its previews reach the server).
STORM_WARMUP_SECONDS = 3.0


@dataclass(frozen=True)
class Run:
    route: str
    clients: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    statuses: dict[int, int]
    #: CPU seconds the serve processes, and the PostgreSQL server, spent meanwhile.
    server_cpu: float
    store_cpu: float

    def cpu_us(self, seconds: float) -> float:
        """CPU microseconds per request."""
        return seconds / self.requests * 1e6

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _client_loop(
    base: str, token: str, route: str, jobs: list[int], prefix: str
) -> tuple[list[float], int, dict[int, int]]:
    import httpx

    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    expected = 201 if route.startswith(("redeem", "hold")) else 200
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=60, limits=httpx.Limits(max_connections=1)
    ) as client:
        await client.get("/healthz")  # connected before the clock starts
        for number in jobs:
            code = f"{prefix}{number:08d}"
            order = f"order-{prefix}{number}"
            started = time.perf_counter()
            try:
                if route.startswith("redeem"):
                    answer = await client.post(
                        "/api/v1/redemptions", json={"code": code, "order": order}
                    )
                elif route == "check":
                    answer = await client.get(f"/api/v1/codes/{code}", params={"order": order})
                elif route == "hold":
                    answer = await client.post("/api/v1/holds", json={"code": code, "order": order})
                elif route == "rollback":
                    answer = await client.post(
                        "/api/v1/redemptions/rollback", json={"code": code, "order": order}
                    )
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
    servers: list[int],
    bases: list[str],
    token: str,
    route: str,
    clients: int,
    requests: int,
    prefix: str,
) -> Run:
    """``requests`` requests from ``clients`` keep-alive clients at once, to the
    serve processes ``servers`` (their pids) listening on ``bases``."""
    processes = min(clients, CLIENT_PROCESSES)
    per_client = [list(range(i, requests, clients)) for i in range(clients)]
    groups = [per_client[p::processes] for p in range(processes)]
    server_cpu = sum(process_cpu_seconds(pid) for pid in servers)
    store_cpu = postgres_server_seconds()
    answers, seconds = released_together(
        _client_process, [(bases, token, route, group, prefix) for group in groups]
    )
    server_cpu = sum(process_cpu_seconds(pid) for pid in servers) - server_cpu
    store_cpu = postgres_server_seconds() - store_cpu
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    for per_process in answers:
        for lat, err, stat in per_process:
            latencies.extend(lat)
            errors += err
            for key, count in stat.items():
                statuses[key] = statuses.get(key, 0) + count
    return Run(
        route, clients, requests, seconds, latencies, errors, statuses, server_cpu, store_cpu
    )


class Storm:
    """``clients`` preview clients asking for the slow template again and again, in a thread."""

    def __init__(self, base: str, clients: int) -> None:
        self.base = base
        self.clients = clients
        self.answers: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Storm:
        self._thread.start()
        time.sleep(STORM_WARMUP_SECONDS)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    async def _run(self) -> None:
        import httpx

        async def one() -> None:
            async with httpx.AsyncClient(base_url=self.base, timeout=120) as client:
                while not self._stop.is_set():
                    try:
                        answer = await client.get(
                            "/preview/result", params={"template": "slow.j2", "fields": "id=b"}
                        )
                        text = answer.text
                        kind = (
                            "stopped by the time limit"
                            if "rendering took longer" in text
                            else "busy"
                            if "busy with other previews" in text
                            else f"other ({answer.status_code})"
                        )
                    except httpx.HTTPError as exc:
                        kind = type(exc).__name__
                    self.answers[kind] = self.answers.get(kind, 0) + 1

        tasks = [asyncio.create_task(one()) for _ in range(self.clients)]
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def bench_database(
    database: str, folder: Path, levels: list[int], requests: int, servers: int, storm: int
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
            prefixes = ["L", "H", "S"] if storm else ["L", "H"]
            total = requests * len(levels) * len(prefixes)
            codes = "".join(
                f"{prefix}{level}-{n:08d}\n"
                for prefix in prefixes
                for level in levels
                for n in range(requests)
            ).encode()
            upload_codes(
                engine, "bench", [Upload("bench.txt", FileFormat.TXT, stream=io.BytesIO(codes))]
            )
            token = create_token(engine, "bench", Scope.REDEEM).token
            templates = None
            if storm:
                templates = folder / f"templates-{database}"
                templates.mkdir()
                (templates / "slow.j2").write_text(SLOW_TEMPLATE, encoding="utf-8")
            started = [
                start_server(
                    url, *(["--templates", str(templates)] if templates is not None else [])
                )
                for _ in range(servers)
            ]
            bases = [base for _, base in started]
            pids = [server.pid for server, _ in started]
            runs: list[tuple[str, Run]] = []
            try:
                for level in levels:
                    trivial = run_level(pids, bases, token, "healthz", level, requests, "")
                    level_runs = [trivial]
                    # Each code is checked, then redeemed, then its redemption
                    # rolled back, by the same order; holds take codes of their own.
                    for route, prefix in ROUTE_PREFIXES:
                        level_runs.append(
                            run_level(
                                pids, bases, token, route, level, requests, f"{prefix}{level}-"
                            )
                        )
                    runs += [(database, run) for run in level_runs]
                    rates = ", ".join(f"{run.route} {run.rate:,.0f}/s" for run in level_runs)
                    print(f"  {database}: {level} clients: {rates}", file=sys.stderr)
                    if storm:
                        with Storm(bases[0], storm) as previews:
                            stormy = run_level(
                                pids, bases, token, "redeem-storm", level, requests, f"S{level}-"
                            )
                        runs.append((database, stormy))
                        print(
                            f"  {database}: {level} clients beside {storm} slow previews: "
                            f"redeem {stormy.rate:,.0f}/s; previews answered meanwhile: "
                            f"{previews.answers or 'none'}",
                            file=sys.stderr,
                        )
            finally:
                for server, _ in started:
                    server.send_signal(signal.SIGTERM)
                for server, _ in started:
                    status = server.wait(60)
                    if status != 0:
                        print(f"  promomail serve exited {status}", file=sys.stderr)
            created = sum(r.statuses.get(201, 0) for _, r in runs if r.route.startswith("redeem"))
            undone = sum(r.statuses.get(200, 0) for _, r in runs if r.route == "rollback")
            with engine.connect() as conn:
                recorded, distinct, live = conn.execute(
                    text(
                        "SELECT count(*), count(DISTINCT code_id),"
                        " count(*) FILTER (WHERE rolled_back_at IS NULL) FROM redemptions"
                    )
                ).one()
            doubles = recorded - distinct
            print(
                f"  {database}: {created:,} redemptions answered 201, {recorded:,} recorded, "
                f"{doubles} codes redeemed twice, {undone:,} rolled back, {live:,} live "
                f"(of {total:,} codes)",
                file=sys.stderr,
            )
            if recorded != created or doubles or live != created - undone:
                raise SystemExit(f"{database}: redemptions do not add up")
            return runs
        finally:
            engine.dispose()


#: The checkout's routes, in the order each level runs them, with the codes they use.
ROUTE_PREFIXES = [("check", "L"), ("hold", "H"), ("redeem", "L"), ("rollback", "L")]

ROUTE_LABELS = {
    "healthz": "GET /healthz",
    "check": "GET /api/v1/codes/{{code}}",
    "hold": "POST /api/v1/holds",
    "redeem": "POST /api/v1/redemptions",
    "rollback": "POST /api/v1/redemptions/rollback",
    "redeem-storm": "POST /api/v1/redemptions ({storm} slow previews)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=3000, help="requests per route and level")
    parser.add_argument("--servers", type=int, default=1, help="serve processes on the store")
    parser.add_argument(
        "--preview-storm",
        type=int,
        default=0,
        metavar="N",
        help="also redeem while N clients preview a slow template (0: no storm)",
    )
    args = parser.parse_args()
    levels = [int(part) for part in args.clients.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    rows: list[list[object]] = []
    with scratch_folder() as folder:
        for database in parse_databases(args.db):
            runs = bench_database(
                database, folder, levels, args.requests, args.servers, args.preview_storm
            )
            trivial = {r.clients: r for _, r in runs if r.route == "healthz"}
            for db, run in runs:
                ratio = run.rate / trivial[run.clients].rate if run.route != "healthz" else 1.0
                rows.append(
                    [
                        db,
                        ROUTE_LABELS[run.route].format(storm=args.preview_storm),
                        run.clients,
                        round(run.rate),
                        run.percentile(0.5),
                        run.percentile(0.99),
                        run.errors,
                        ratio,
                        run.cpu_us(run.server_cpu),
                        run.cpu_us(run.store_cpu) if db == "postgresql" else "",
                    ]
                )
    print_table(
        [
            *("database", "route", "clients", "req/s", "p50 ms", "p99 ms", "errors"),
            *("vs healthz", "serve CPU µs/req", "PostgreSQL CPU µs/req"),
        ],
        rows,
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
