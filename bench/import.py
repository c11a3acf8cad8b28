"""Upload and generation speed, and the memory they take, on SQLite and PostgreSQL.

    python bench/import.py                  # 1,000,000 codes on both databases
    python bench/import.py --count 100000 --db sqlite

The upload reads a txt file written beforehand (random 12-character codes);
``--steps upload-csv`` a csv of such codes with an ``available_till`` column
(a few distinct dates, some blank). An upload must stream, so its peak
memory should not grow with the file. Each step runs in a fresh process:
"RSS start" is the process after its imports, "RSS peak" its high-water mark.
On SQLite the peak includes the page cache the store asks for (64 MiB while
loading, pools/store/db.py), which fills up on a large pool; ``--python-heap``
also traces the Python heap (tracemalloc), the part that would grow if the
upload did not stream. PostgreSQL comes from PROMOMAIL_TEST_PG (default the
local ``test`` database); every run uses a schema of its own and drops it.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from benchlib import (
    CpuMeter,
    fresh_store,
    measure_in_child,
    parse_databases,
    print_table,
    scratch_folder,
)

from promomail.pools.codes.generation import CodeSpec

_WRITE_BLOCK = 100_000


def write_codes_file(path: Path, count: int) -> None:
    """``count`` random codes, one per line, written a block at a time."""
    spec = CodeSpec(length=12)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for start in range(0, count, _WRITE_BLOCK):
            codes = spec.random_bodies(min(_WRITE_BLOCK, count - start))
            out.write("\n".join(codes))
            out.write("\n")


#: Ends of availability the csv file cycles through: real files share a few.
_CSV_ENDS = ("2031-03-31", "2031-06-30", "2031-09-30T18:00:00+02:00", "")


def write_csv_file(path: Path, count: int) -> None:
    """``count`` random codes with an ``available_till`` column (some blank)."""
    spec = CodeSpec(length=12)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        out.write("code,available_till\n")
        for start in range(0, count, _WRITE_BLOCK):
            codes = spec.random_bodies(min(_WRITE_BLOCK, count - start))
            ends = _CSV_ENDS * (len(codes) // len(_CSV_ENDS) + 1)
            out.writelines(f"{code},{end}\n" for code, end in zip(codes, ends, strict=False))


def _prepare(url: str) -> None:
    from promomail.pools.admin.lifecycle import PoolSettings, create_pool
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url))
    try:
        create_pool(engine, PoolSettings("Bench", description="benchmark"), activate=True)
    finally:
        engine.dispose()


def _traced(heap: bool) -> Callable[[], float | None]:
    """Start tracing Python allocations if asked; returns how to read the peak (MB)."""
    if not heap:
        return lambda: None
    tracemalloc.start()
    return lambda: tracemalloc.get_traced_memory()[1] / 2**20


#: One connection, so that the server's CPU is that of one process.
_ONE_CONNECTION = {"pool_size": 1, "max_overflow": 0}

StepResult = tuple[float, float, int, int, float | None]


def upload_step(url: str, path: str, heap: bool) -> StepResult:
    """(seconds, CPU s, accepted, duplicates, Python heap peak MB) of one upload of the file."""
    from promomail.pools.codes.imports import Upload, upload_codes
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url, engine_options=_ONE_CONNECTION))
    try:
        meter = CpuMeter(engine)
        heap_peak = _traced(heap)
        started, cpu = time.perf_counter(), meter.now()
        (report,) = upload_codes(engine, "bench", [Upload.from_path(path)])
        seconds, cpu = time.perf_counter() - started, meter.now() - cpu
        return seconds, cpu, report.accepted, report.duplicates, heap_peak()
    finally:
        engine.dispose()


def generate_step(url: str, count: int, heap: bool) -> StepResult:
    """(seconds, CPU s, generated, 0, Python heap peak MB) of one generation."""
    from promomail.pools.codes.generation import CodeSpec, generate_codes
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url, engine_options=_ONE_CONNECTION))
    try:
        meter = CpuMeter(engine)
        heap_peak = _traced(heap)
        started, cpu = time.perf_counter(), meter.now()
        report = generate_codes(engine, "bench", count, CodeSpec())
        seconds, cpu = time.perf_counter() - started, meter.now() - cpu
        return seconds, cpu, report.generated, 0, heap_peak()
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="codes per step")
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite,postgresql")
    parser.add_argument(
        "--python-heap",
        action="store_true",
        help="also trace the Python heap's peak (tracemalloc; slows the steps down)",
    )
    parser.add_argument("--steps", default="upload,generate", help="upload,generate,upload-csv")
    args = parser.parse_args()
    heap: bool = args.python_heap
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    if not steps or set(steps) - {"upload", "generate", "upload-csv"}:
        raise SystemExit("--steps takes a comma-separated list of upload, generate, upload-csv")
    databases = parse_databases(args.db)
    count: int = args.count

    rows: list[list[object]] = []
    with scratch_folder() as folder:
        codes_file = folder / "codes.txt"
        started = time.perf_counter()
        write_codes_file(codes_file, count)
        size_mb = codes_file.stat().st_size / 1e6
        print(
            f"wrote {count:,} codes ({size_mb:,.1f} MB) to {codes_file} "
            f"in {time.perf_counter() - started:.1f} s"
        )
        csv_file = folder / "codes.csv"
        if "upload-csv" in steps:
            write_csv_file(csv_file, count)
            print(f"wrote {count:,} codes ({csv_file.stat().st_size / 1e6:,.1f} MB) to {csv_file}")
        for database in databases:
            for step in steps:
                with fresh_store(database, folder) as url:
                    _prepare(url)
                    if step == "upload":
                        measured = measure_in_child(upload_step, url, str(codes_file), heap)
                    elif step == "upload-csv":
                        measured = measure_in_child(upload_step, url, str(csv_file), heap)
                    else:
                        measured = measure_in_child(generate_step, url, count, heap)
                seconds, cpu, stored, duplicates, heap_mb = measured.result
                rows.append(
                    [
                        database,
                        step,
                        stored,
                        duplicates,
                        seconds,
                        round(count / seconds),
                        cpu,
                        round(count / cpu),
                        measured.base_rss_mb,
                        measured.peak_rss_mb,
                        "-" if heap_mb is None else f"{heap_mb:,.1f}",
                    ]
                )
                print(f"  {database} {step}: {seconds:.1f} s", flush=True)
    print()
    print_table(
        [
            "database",
            "step",
            "codes stored",
            "duplicates",
            "seconds",
            "codes/s",
            "CPU s",
            "codes/CPU s",
            "RSS start MB",
            "RSS peak MB",
            "Python heap peak MB",
        ],
        rows,
    )
    print(
        "\nCPU: the uploading process and, for a local PostgreSQL, its server process; "
        "codes per CPU second shift less with the load of a shared machine than codes/s."
        "\ntargets: upload >= 250,000 codes/s on SQLite, >= 100,000 on PostgreSQL, "
        "peak memory < 200 MB"
    )


if __name__ == "__main__":
    main()
