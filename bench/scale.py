"""Load and scale: many machines on one mailing, a ten-million-code pool, memory.

    python bench/scale.py                          # 1,000,000 recipients, 10,000,000 codes
    python bench/scale.py --recipients 100000 --pool-size 1000000 --small-render 20000

Three measurements, each printed as a table:

1. Sharded render: 4 "machines" x 2 workers (``promomail render --shard K/4
   --workers 2``, four CLI processes started together) render one mailing
   against PostgreSQL. Checks zero duplicate codes and every recipient
   exactly once; prints recipients/s overall, its ratio to the single-process
   bare render of the same template (``bench/render.py``: the compiled
   template for in-memory recipients, no store, no I/O), and the peak memory of the
   largest process (CLI parents and their workers).
2. A pool of ``--pool-size`` codes on SQLite and PostgreSQL: upload time of a
   txt file, a render of ``--small-render`` recipients from it, and the
   per-code claim cost compared with a 10,000-code pool.
3. Peak memory of a 1-worker render of all recipients on SQLite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import fresh_store, measure_in_child, print_table, scratch_folder
from claim import fill
from render import TEMPLATE, bare_render, fill_store, write_recipients
from sqlalchemy import Engine, text

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.codes.generation import CodeSpec
from promomail.pools.codes.imports import Upload, upload_codes
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.db import StoreConfig, open_engine
from promomail.templating.choices import OutputFormat
from promomail.templating.mailing.outputs import OutputTarget
from promomail.templating.mailing.request import RenderRequest
from promomail.templating.mailing.run import render_mailing

REPO = Path(__file__).resolve().parent.parent
SHARDS = 4
WORKERS_PER_SHARD = 2
CLAIM_BATCH = 1_000
CLAIM_ROUNDS = 8  # with the warm-up, 9,000 codes: fits the 10,000-code pool


def _cli() -> list[str]:
    script = shutil.which("promomail")
    return [script] if script else [sys.executable, str(REPO / "cli.py")]


#: Runs the shards' commands and reports their peak memory. A process
#: started by this script would carry over this script's own peak (Linux
#: keeps ru_maxrss across fork and exec), so a small launcher starts them.
_LAUNCHER = """
import json, resource, subprocess, sys
commands = json.loads(sys.stdin.read())
processes = [subprocess.Popen(c, stderr=subprocess.PIPE) for c in commands]
errors = [p.communicate()[1].decode() for p in processes]
peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"codes": [p.returncode for p in processes], "errors": errors, "peak_mb": peak_mb}))
"""


def _launch(commands: list[list[str]]) -> dict[str, Any]:
    """Run ``commands`` side by side from a small launcher; their exits, stderr, peak MB."""
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER],
        input=json.dumps(commands),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _issuance_check(url: str, mailing: str) -> dict[str, int]:
    engine = open_engine(StoreConfig(url))
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT code_id), count(DISTINCT customer_id) "
                    "FROM issuances WHERE mailing_id = :m AND kind = 'initial'"
                ),
                {"m": mailing},
            ).one()
            reserved = conn.execute(
                text(
                    "SELECT count(*) FROM codes WHERE status = 'issued' "
                    "AND reserved_token IN (SELECT token FROM held_codes)"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    issued, codes, customers = (int(v) for v in row)
    return {"issued": issued, "codes": codes, "customers": customers, "reserved": int(reserved)}


def sharded_render(recipients: Path, count: int, folder: Path, bare_rate: float) -> None:
    print(
        f"\n== {SHARDS} machines x {WORKERS_PER_SHARD} workers on PostgreSQL, {count:,} recipients"
    )
    with fresh_store("postgresql", folder) as url:
        fill_store(url, count)
        outputs = [folder / f"shard-{k}.jsonl" for k in range(1, SHARDS + 1)]
        commands = [
            [
                *_cli(),
                "--db",
                url,
                "render",
                str(TEMPLATE),
                "--recipients",
                str(recipients),
                "--mailing",
                "sharded",
                "--shard",
                f"{k}/{SHARDS}",
                "--workers",
                str(WORKERS_PER_SHARD),
                "--out",
                str(out),
            ]
            for k, out in enumerate(outputs, start=1)
        ]
        started = time.perf_counter()
        launched = _launch(commands)
        seconds = time.perf_counter() - started
        failed = [
            error
            for code, error in zip(launched["codes"], launched["errors"], strict=True)
            if code != 0
        ]
        if failed:
            raise SystemExit("a shard failed:\n" + "\n".join(failed))
        lines = sum(sum(1 for _ in out.open(encoding="utf-8")) for out in outputs)
        check = _issuance_check(url, "sharded")
    rate = count / seconds
    print_table(
        [
            "recipients",
            "output lines",
            "codes issued",
            "distinct codes",
            "duplicates",
            "reserved left",
            "seconds",
            "recipients/s",
            "x bare",
            "peak MB/process",
        ],
        [
            (
                count,
                lines,
                check["issued"],
                check["codes"],
                check["issued"] - check["codes"],
                check["reserved"],
                seconds,
                rate,
                rate / bare_rate,
                launched["peak_mb"],
            )
        ],
    )


def _write_codes(path: Path, count: int) -> None:
    spec = CodeSpec(length=12)
    with path.open("w", encoding="ascii") as handle:
        left = count
        while left:
            block = min(left, 500_000)
            handle.write("\n".join(spec.random_bodies(block)))
            handle.write("\n")
            left -= block


def _upload(url: str, path: str) -> int:
    engine = open_engine(StoreConfig(url))
    try:
        create_pool(
            engine, PoolSettings("Welcome", description="bench"), pool_id="welcome", activate=True
        )
        report = upload_codes(engine, "welcome", [Upload.from_path(path)])[0]
        return report.accepted
    finally:
        engine.dispose()


def _render(url: str, recipients: str, out: str, mailing: str) -> int:
    request = RenderRequest(
        template_path=str(TEMPLATE),
        recipients_path=recipients,
        mailing_id=mailing,
        db_url=url,
        output=OutputTarget(OutputFormat.JSONL, Path(out)),
    )
    return render_mailing(request).totals.rendered


def _claim_cost(engine: Engine, pool_id: str) -> float:
    """Median wall seconds per claimed code over a few batches of claims."""
    claim(engine, pool_id, "claim-bench", [f"warm-{i}" for i in range(CLAIM_BATCH)])
    per_code = []
    for round_ in range(CLAIM_ROUNDS):
        customers = [f"c{round_}-{i}" for i in range(CLAIM_BATCH)]
        started = time.perf_counter()
        claim(engine, pool_id, "claim-bench", customers)
        per_code.append((time.perf_counter() - started) / CLAIM_BATCH)
    return statistics.median(per_code)


def big_pool(pool_size: int, small_render: int, folder: Path) -> None:
    print(f"\n== a pool of {pool_size:,} codes")
    codes_file = folder / "codes.txt"
    _write_codes(codes_file, pool_size)
    recipients = folder / "small.csv"
    write_recipients(recipients, small_render)
    rows: list[tuple[Any, ...]] = []
    for database in ("sqlite", "postgresql"):
        with fresh_store(database, folder) as url:
            upload = measure_in_child(_upload, url, str(codes_file))
            render = measure_in_child(
                _render, url, str(recipients), str(folder / "small.jsonl"), "small"
            )
            engine = open_engine(StoreConfig(url))
            try:
                big_cost = _claim_cost(engine, "welcome")
            finally:
                engine.dispose()
        with fresh_store(database, folder) as url:
            engine = open_engine(StoreConfig(url))
            try:
                fill(engine, 10_000)
                small_cost = _claim_cost(engine, "bench")
            finally:
                engine.dispose()
        rows.append(
            (
                database,
                upload.result,
                upload.seconds,
                upload.result / upload.seconds,
                upload.peak_rss_mb,
                render.result,
                render.result / render.seconds,
                small_cost * 1e6,
                big_cost * 1e6,
                big_cost / small_cost,
            )
        )
    print_table(
        [
            "database",
            "uploaded",
            "upload s",
            "codes/s",
            "upload peak MB",
            "rendered",
            "recipients/s",
            "us/code @10k",
            f"us/code @{pool_size:,}",
            "ratio",
        ],
        rows,
    )


def memory(recipients: Path, count: int, folder: Path) -> None:
    print(f"\n== peak memory of a {count:,}-recipient render (SQLite, 1 worker)")
    with fresh_store("sqlite", folder) as url:
        fill_store(url, count)
        run = measure_in_child(_render, url, str(recipients), str(folder / "mem.jsonl"), "mem")
    print_table(
        ["rendered", "seconds", "recipients/s", "peak MB", "target MB"],
        [(run.result, run.seconds, run.result / run.seconds, run.peak_rss_mb, 250)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--pool-size", type=int, default=10_000_000)
    parser.add_argument("--small-render", type=int, default=100_000)
    parser.add_argument("--skip", default="", help="comma list of: sharded,pool,memory")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    with scratch_folder() as folder:
        recipients = folder / "recipients.csv"
        write_recipients(recipients, args.recipients)
        bare = measure_in_child(bare_render, args.recipients)
        bare_rate = args.recipients / bare.result["seconds"]
        print(f"bare MessageTemplate render without I/O, 1 process: {bare_rate:,.0f} recipients/s")
        if "sharded" not in skip:
            sharded_render(recipients, args.recipients, folder, bare_rate)
        if "pool" not in skip:
            big_pool(args.pool_size, args.small_render, folder)
        if "memory" not in skip:
            memory(recipients, args.recipients, folder)


if __name__ == "__main__":
    main()
