"""Claim speed by pool size: is the per-code cost independent of the pool?

    python bench/claim.py                                   # 10k, 1M, 10M codes; SQLite
    python bench/claim.py --sizes 10000,100000 --db sqlite,postgresql

For each size a fresh store gets a pool of that many codes (bulk loader,
outside the timing). Then, round-robin over the pools so that a busy moment
of the machine hits every size alike, ``--claims`` calls of ``claim()`` per
pool each hand codes to ``--batch`` new customers of one mailing. The table
shows claim calls and codes per second, the cost per code of the median call,
and that cost relative to the smallest pool; the design target is at most
1.5x at the largest size. PostgreSQL gets a VACUUM ANALYZE after the fill,
as autovacuum would give it.

Before that, on a pool of ``--settle-pool`` codes per database, the render's
store work per code (``reserve`` then ``settle`` of a chunk of ``--batch``
codes, all handed out) is timed against a floor, in alternating rounds: the
cheapest plain SQL that records the same chunk in the same tables (one
issuance row inserted and one code row marked issued per code, ids known in
advance, one transaction; the cheapest of a few forms in the run). The target
is at most 1.5x the floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import ExitStack
from typing import Any

from benchlib import CpuMeter, fresh_store, parse_databases, print_table, scratch_folder
from sqlalchemy import Engine, insert, select, text

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.issuing.claiming import claim, reserve, settle
from promomail.pools.store.clock import utcnow
from promomail.pools.store.code_loading import insert_codes
from promomail.pools.store.db import StoreConfig, is_postgres, open_engine, write_transaction
from promomail.pools.store.models import Code, CodeStatus, ImportBatch

_FILL_BLOCK = 250_000
_DEFAULT_SIZES = "10000,1000000,10000000"


def fill(engine: Engine, size: int, pool_id: str = "bench") -> float:
    """A pool of ``size`` codes (id "bench" unless told); returns the seconds it took."""
    started = time.perf_counter()
    create_pool(engine, PoolSettings(pool_id, description="benchmark"), activate=True)
    with write_transaction(engine) as conn:
        batch = conn.execute(
            insert(ImportBatch)
            .values(pool_id=pool_id, source="bench", format="generated", created_at=utcnow())
            .returning(ImportBatch.id)
        ).scalar_one()
        for start in range(0, size, _FILL_BLOCK):
            codes = [
                f"{pool_id[0].upper()}{i:010d}"
                for i in range(start, min(start + _FILL_BLOCK, size))
            ]
            insert_codes(conn, pool_id, batch, plain=codes)
    if is_postgres(engine):
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE codes")
            )
    return time.perf_counter() - started


def claim_plan(engine: Engine) -> str:
    """How the database runs the claim's row selection (one line per step)."""
    select_sql = (
        "SELECT id FROM codes WHERE pool_id = 'bench' AND status = 'available' "
        "AND issuable_until > CURRENT_TIMESTAMP "
        "AND (issue_start IS NULL OR issue_start <= CURRENT_TIMESTAMP) "
        "ORDER BY issuable_until, id LIMIT 1000"
    )
    with engine.connect() as conn:
        if is_postgres(engine):
            rows = conn.execute(text(f"EXPLAIN {select_sql} FOR UPDATE SKIP LOCKED")).all()
            return "\n".join(f"    {r[0]}" for r in rows)
        rows = conn.execute(text(f"EXPLAIN QUERY PLAN {select_sql}")).all()
        return "\n".join(f"    {r[-1]}" for r in rows)


def warm_up(engine: Engine, batch: int) -> None:
    claim(engine, "bench", "bench", [f"warm-{i}" for i in range(batch)])


def timed_claim(engine: Engine, round_: int, batch: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one claim call for ``batch`` new customers.

    SQLite does all its work in this process, so on a busy machine its CPU
    time is the steadier measure; PostgreSQL's work is in the server, so only
    the wall time tells.
    """
    customers = [f"c{round_}-{i}" for i in range(batch)]
    wall, cpu = time.perf_counter(), time.process_time()
    given = claim(engine, "bench", "bench", customers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(given) == batch
    return wall, cpu


_ISSUANCE_COLUMNS = "pool_id, code_id, customer_id, mailing_id, kind, slot, exclusive, issued_at"
_FLOOR_PG_INSERT = (
    f"INSERT INTO issuances ({_ISSUANCE_COLUMNS}) "
    "SELECT 'floor', c, k, 'floor', 'initial', 0, true, %s "
    "FROM unnest(%s::bigint[], %s::text[]) AS h (c, k)"
)
_FLOOR_PG_MARK = "UPDATE codes SET status = 'issued' WHERE id = ANY(%s)"
_FLOOR_PG_ONE = (
    "WITH marked AS (UPDATE codes SET status = 'issued' WHERE id = ANY(%s)) " + _FLOOR_PG_INSERT
)
_FLOOR_SQLITE_INSERT = f"INSERT INTO issuances ({_ISSUANCE_COLUMNS}) VALUES ('floor', ?, ?, 'floor', 'initial', 0, 1, ?)"
_FLOOR_SQLITE_MARK = "UPDATE codes SET status = 'issued' WHERE id = ?"
_FLOOR_SQLITE_JSON_INSERT = (
    f"INSERT INTO issuances ({_ISSUANCE_COLUMNS}) "
    "SELECT 'floor', json_extract(value, '$[0]'), json_extract(value, '$[1]'), 'floor', "
    "'initial', 0, 1, ? FROM json_each(?)"
)
_FLOOR_SQLITE_JSON_MARK = (
    "UPDATE codes SET status = 'issued' WHERE id IN (SELECT value FROM json_each(?))"
)

#: The plain-SQL ways of recording a chunk; the floor is the cheapest in the run.
FLOOR_FORMS = {
    "postgresql": ("insert then update", "update then insert", "one statement"),
    "sqlite": ("executemany", "json_each", "json_each, update first"),
}


def floor_round(
    engine: Engine, meter: CpuMeter, ids: list[int], label: str, form: str
) -> tuple[float, float]:
    """Seconds to record ``ids`` in plain SQL: insert their issuances, mark them issued.

    Parameters are built before the clock starts, so the floor holds no
    Python work at all. Returns (wall s, CPU s of this process and the server).
    """
    now = utcnow()
    customers = [f"{label}-{i}" for i in range(len(ids))]
    if is_postgres(engine):
        insert = (now, ids, customers)
        forms: dict[str, list[tuple[str, Any]]] = {
            "insert then update": [(_FLOOR_PG_INSERT, insert), (_FLOOR_PG_MARK, (ids,))],
            "update then insert": [(_FLOOR_PG_MARK, (ids,)), (_FLOOR_PG_INSERT, insert)],
            "one statement": [(_FLOOR_PG_ONE, (ids, *insert))],
        }
    else:
        stamp = now.isoformat(sep=" ", timespec="microseconds")
        rows = list(zip(ids, customers, [stamp] * len(ids), strict=True))
        marks = [(code_id,) for code_id in ids]
        json_insert = (
            _FLOOR_SQLITE_JSON_INSERT,
            (stamp, json.dumps(list(zip(ids, customers, strict=True)))),
        )
        json_mark = (_FLOOR_SQLITE_JSON_MARK, (json.dumps(ids),))
        forms = {
            "executemany": [(_FLOOR_SQLITE_INSERT, rows), (_FLOOR_SQLITE_MARK, marks)],
            "json_each": [json_insert, json_mark],
            "json_each, update first": [json_mark, json_insert],
        }
    steps = forms[form]
    started, cpu = time.perf_counter(), meter.now()
    with write_transaction(engine) as conn:
        for sql, parameters in steps:
            conn.exec_driver_sql(sql, parameters)
    return time.perf_counter() - started, meter.now() - cpu


def library_round(
    engine: Engine, meter: CpuMeter, batch: int, round_: int
) -> tuple[float, float, float]:
    """(wall s of reserve, of settle, CPU s of both) for one chunk handed out whole."""
    wall, cpu = time.perf_counter(), meter.now()
    reservation = reserve(engine, "lib", batch, scope="bench")
    reserved = time.perf_counter() - wall
    cpu = meter.now() - cpu
    handouts = [code.to(f"l{round_}-{i}") for i, code in enumerate(reservation.codes)]
    assert len(handouts) == batch
    wall, cpu_settle = time.perf_counter(), meter.now()
    settle(engine, "bench", [reservation], {"lib": handouts})
    settled = time.perf_counter() - wall
    return reserved, settled, cpu + meter.now() - cpu_settle


def settle_vs_floor(
    database: str, folder: object, size: int, batch: int, rounds: int
) -> list[object]:
    """One row of the store-work table: library and floor, alternating rounds."""
    with fresh_store(database, folder) as url:  # type: ignore[arg-type]
        # One connection, so the server's CPU is that of one process.
        engine = open_engine(StoreConfig(url, engine_options={"pool_size": 1, "max_overflow": 0}))
        try:
            fill(engine, size, "lib")
            fill(engine, size, "floor")
            with engine.connect() as conn:
                floor_ids = list(
                    conn.execute(
                        select(Code.id)
                        .where(Code.pool_id == "floor", Code.status == CodeStatus.AVAILABLE)
                        .order_by(Code.issuable_until, Code.id)
                        .limit((rounds + 1) * batch * len(FLOOR_FORMS[database]))
                    ).scalars()
                )
            meter = CpuMeter(engine)
            forms = FLOOR_FORMS[database]
            chunks = iter(floor_ids[i : i + batch] for i in range(0, len(floor_ids), batch))
            library_round(engine, meter, batch, -1)
            for form in forms:
                floor_round(engine, meter, next(chunks), f"warm-{form}", form)
            floors: dict[str, list[tuple[float, float]]] = {form: [] for form in forms}
            library: list[tuple[float, float, float]] = []

            def floor_rounds(round_: int) -> None:
                for form in forms:
                    floors[form].append(
                        floor_round(engine, meter, next(chunks), f"{form}{round_}", form)
                    )

            for round_ in range(rounds):
                # Library first in even rounds, last in odd ones.
                if round_ % 2:
                    floor_rounds(round_)
                library.append(library_round(engine, meter, batch, round_))
                if not round_ % 2:
                    floor_rounds(round_)
        finally:
            engine.dispose()

    def us(seconds: float) -> float:
        return seconds / batch * 1e6

    def median_us(samples: list[float]) -> float:
        return us(statistics.median(samples))

    library_wall = median_us([r + s for r, s, _ in library])
    floor_form = min(floors, key=lambda form: statistics.median(w for w, _ in floors[form]))
    floor_wall = median_us([w for w, _ in floors[floor_form]])
    # CPU per code over all rounds (the clock ticks of /proc are too coarse
    # for one round); the floor's cheapest form by CPU.
    library_cpu = us(sum(c for _, _, c in library) / rounds)
    floor_cpu = min(us(sum(c for _, c in samples) / rounds) for samples in floors.values())
    return [
        database,
        size,
        median_us([r for r, _, _ in library]),
        median_us([s for _, s, _ in library]),
        library_wall,
        floor_wall,
        floor_form,
        f"{library_wall / floor_wall:.2f}x",
        library_cpu,
        floor_cpu,
        f"{library_cpu / floor_cpu:.2f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=_DEFAULT_SIZES, help="pool sizes, comma-separated")
    parser.add_argument("--db", default="sqlite", help="sqlite,postgresql")
    parser.add_argument("--batch", type=int, default=1_000, help="customers per claim call")
    parser.add_argument("--claims", type=int, default=8, help="timed claim calls per pool")
    parser.add_argument("--plan", action="store_true", help="print the claim query plan")
    parser.add_argument(
        "--settle-pool", type=int, default=200_000, help="pool of the reserve/settle run (0: skip)"
    )
    parser.add_argument("--settle-rounds", type=int, default=20, help="reserve/settle rounds")
    parser.add_argument("--skip-sizes", action="store_true", help="only the reserve/settle run")
    args = parser.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(","))
    databases = parse_databases(args.db)
    needed = (args.claims + 1) * args.batch
    if sizes[0] < needed:
        raise SystemExit(f"the smallest pool needs at least {needed:,} codes for these claims")

    if args.settle_pool:
        with scratch_folder() as folder:
            store_rows = [
                settle_vs_floor(d, folder, args.settle_pool, args.batch, args.settle_rounds)
                for d in databases
            ]
        print_table(
            [
                "database",
                "pool size",
                "reserve us/code",
                "settle us/code",
                "library us/code",
                "floor us/code",
                "floor form",
                "library / floor",
                "library CPU us/code",
                "floor CPU us/code",
                "CPU library / floor",
            ],
            store_rows,
        )
        print(
            f"\nreserve + settle of {args.batch:,} codes per chunk, medians of "
            f"{args.settle_rounds} alternating rounds; floor: the cheapest of "
            "the plain-SQL forms that insert the issuances and mark the codes issued.\n"
            "CPU: this process and, for a local PostgreSQL, its server process, "
            "per code over all rounds.\ntarget: library / floor at most 1.5x\n",
            flush=True,
        )
    if args.skip_sizes:
        return

    cases = [(database, size) for database in databases for size in sizes]
    with scratch_folder() as folder, ExitStack() as stores:
        engines: dict[tuple[str, int], Engine] = {}
        fill_seconds: dict[tuple[str, int], float] = {}
        for case in cases:
            url = stores.enter_context(fresh_store(case[0], folder))
            engine = open_engine(StoreConfig(url))
            stores.callback(engine.dispose)
            fill_seconds[case] = fill(engine, case[1])
            print(
                f"  {case[0]}: {case[1]:,} codes loaded in {fill_seconds[case]:.1f} s", flush=True
            )
            if args.plan:
                print(claim_plan(engine))
            warm_up(engine, args.batch)
            engines[case] = engine
        # Round-robin over the pools, so a busy moment of the machine falls on
        # every size alike; then the median call of each.
        walls: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
        cpus: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
        for round_ in range(args.claims):
            for case in cases:
                wall, cpu = timed_claim(engines[case], round_, args.batch)
                walls[case].append(wall)
                cpus[case].append(cpu)

    batch: int = args.batch

    def us_per_code(samples: list[float]) -> float:
        return statistics.median(samples) / batch * 1e6

    rows: list[list[object]] = []
    for case in cases:
        database, size = case
        wall_us, cpu_us = us_per_code(walls[case]), us_per_code(cpus[case])
        first = (database, sizes[0])
        rows.append(
            [
                database,
                size,
                fill_seconds[case],
                round(len(walls[case]) / sum(walls[case]), 1),
                round(1e6 / wall_us),
                wall_us,
                f"{wall_us / us_per_code(walls[first]):.2f}x",
                cpu_us,
                f"{cpu_us / us_per_code(cpus[first]):.2f}x",
            ]
        )
    print()
    print_table(
        [
            "database",
            "pool size",
            "fill s",
            "claims/s",
            "codes/s",
            "wall us/code",
            "vs smallest",
            "CPU us/code",
            "vs smallest",
        ],
        rows,
    )
    print(
        f"\n{args.batch:,} customers per claim call; per-code figures from the median call. "
        "CPU is this process only (all of SQLite's work, the client side of PostgreSQL's)."
    )
    print("\ntarget: the largest pool's cost per code within 1.5x of the smallest's")


if __name__ == "__main__":
    main()
