"""Mailing render speed against a plain Jinja2 sandbox render of the same template.

    python bench/render.py                          # 200,000 recipients
    python bench/render.py --recipients 20000
    python bench/render.py --recipients 20000 --profile    # + cProfile of one render
    python bench/render.py --recipients 200000 --db sqlite  # leave PostgreSQL out

One run prints, for ``sample_templates/welcome.j2`` (subject, text, html; one
``client.promocode('welcome')`` shown in text and html):

* **bare**, the reference and the ceiling: the mailing's own compiled
  ``MessageTemplate`` (the sandbox with every limit a render has) rendered in
  one process for synthetic recipients built in memory beforehand; no store,
  no reading, no encoding, no writing.
* **pure**: what the template costs without promomail, with I/O. The same Jinja2
  ``SandboxedEnvironment`` settings (StrictUndefined, trim/lstrip blocks, the
  html block compiled a second time with autoescape), ``client`` a plain
  object whose ``promocode`` returns a code computed beforehand, the
  recipients read with ``csv.DictReader`` and every message written as one
  JSON line: the same input and output work as a render, minus the store.
* **promomail** renders (``render_mailing``, JSON Lines output) on SQLite with
  1 and 2 workers and on PostgreSQL with 2 workers, each into a fresh store
  whose pool holds one generated code per recipient (filled outside the
  timing). The time is the whole ``render_mailing`` call: preflight, reading
  the recipients, worker start-up, rendering, claiming, joining the output.

Each figure is recipients per second and its ratio to a bare render measured
just before it (the median of ``--rounds`` such pairs, their range beside
it: the bare line against its own pair shows how much the machine drifts),
and CPU microseconds per recipient against that bare render's. The CPU of
a render is counted over every process of it (the step's process, the
forkserver, workers, store helpers and whatever they start, waited for or
not) in a cgroup v1 ``cpuacct`` group where one can be made, else (said in
the output) from ``RUSAGE_SELF`` + ``RUSAGE_CHILDREN``; on PostgreSQL the
render's backends are moved into a cgroup of their own as they connect
(other sessions of the server left out) and their CPU is added: the CPU
ratio is bare CPU / (render + its backends). Every step runs in its own
spawned process; memory is the peak resident size of that process
(``RUSAGE_SELF``) and of the largest process below it (``RUSAGE_CHILDREN``).
Targets: wall clock, SQLite 1 worker >= 0.6x bare, SQLite 2 workers >= 1.0x,
PostgreSQL 2 workers >= 0.8x; CPU, SQLite >= 0.7 (1 and 2 workers),
PostgreSQL >= 0.45; every process under 250 MB.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import json
import multiprocessing.forkserver
import os
import pstats
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import (
    PostgresCpu,
    TreeCpu,
    fresh_store,
    measure_in_child,
    parse_databases,
    print_table,
    scratch_folder,
)
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import text

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.codes.generation import CodeSpec, generate_codes
from promomail.pools.store.db import StoreConfig, is_postgres, open_engine
from promomail.templating.choices import OutputFormat
from promomail.templating.mailing.outputs import OutputTarget
from promomail.templating.mailing.request import RenderRequest
from promomail.templating.mailing.run import render_mailing
from promomail.templating.template.client import Client
from promomail.templating.template.message import MessageTemplate

TEMPLATE = Path(__file__).resolve().parent.parent / "sample_templates" / "welcome.j2"
POOL = "welcome"
MEMORY_TARGET_MB = 250.0


@dataclass(frozen=True)
class Config:
    name: str
    database: str  # "bare", "pure", "sqlite" or "postgresql"
    workers: int
    target: float | None  # minimum wall-clock ratio to bare
    cpu_target: float | None  # minimum ratio of bare CPU to the render's (server included)


CONFIGS = (
    Config("bare MessageTemplate render, no I/O", "bare", 1, None, None),
    Config("pure Jinja2 sandbox, with I/O", "pure", 1, None, None),
    Config("promomail SQLite, 1 worker", "sqlite", 1, 0.6, 0.7),
    Config("promomail SQLite, 2 workers", "sqlite", 2, 1.0, 0.7),
    Config("promomail PostgreSQL, 2 workers", "postgresql", 2, 0.8, 0.45),
)


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def write_recipients(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email", "first_name"])
        for i in range(count):
            writer.writerow([f"cust-{i:07d}", f"customer{i}@example.com", f"Name{i}"])


# -- bare ---------------------------------------------------------------------------


class FixedCodes:
    """A code source that hands every recipient the code computed for it beforehand."""

    def __init__(self, codes: dict[str, str]) -> None:
        self.codes = codes

    def promocode(self, customer_id: str, pool: str) -> str:
        return self.codes[customer_id]

    def last_promocode(self, customer_id: str, pool: str) -> str:
        return ""

    def promocodes(self, customer_id: str, pool: str) -> list[str]:
        return [self.codes[customer_id]]


def bare_render(count: int) -> dict[str, Any]:
    """The ceiling: the mailing's own compiled template, rendered with nothing around it.

    The same ``MessageTemplate`` (sandbox, limits, the time limit kept as a
    render's chunks keep it) a render uses, for synthetic recipients built in memory before the clock starts;
    no store, no reading, no encoding, no writing.
    """
    template = MessageTemplate.from_file(TEMPLATE)
    recipients = [
        (
            f"cust-{i:07d}",
            {"id": f"cust-{i:07d}", "email": f"customer{i}@example.com", "first_name": f"Name{i}"},
        )
        for i in range(count)
    ]
    source = FixedCodes(
        dict(zip((r for r, _ in recipients), CodeSpec(length=10).random_bodies(count), strict=True))
    )
    render = template.render
    meter = TreeCpu()
    try:
        started = time.perf_counter()
        cpu = meter.seconds()
        rendered = 0
        # Timed as a render's chunks are: one ticking timer, not one per message.
        with template.timed():
            for recipient_id, fields in recipients:
                render({"client": Client(recipient_id, fields, source)})
                rendered += 1
        return {
            "seconds": time.perf_counter() - started,
            "cpu": meter.seconds() - cpu,
            "server_cpu": 0.0,
            "cpu_how": meter.how,
            "rendered": rendered,
            "peak_self_mb": _rss_mb(resource.RUSAGE_SELF),
            "peak_workers_mb": None,
        }
    finally:
        meter.close()


# -- pure ---------------------------------------------------------------------------


class PlainClient:
    """Recipient columns as attributes, and a code known in advance."""

    def __init__(self, fields: dict[str, str], code: str) -> None:
        self.fields = fields
        self.code = code

    def __getattr__(self, name: str) -> str:
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def promocode(self, pool: str) -> str:
        return self.code


def _sandbox(*, autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=autoescape, trim_blocks=True, lstrip_blocks=True
    )


def pure_render(recipients: str, out: str, count: int) -> dict[str, Any]:
    source = TEMPLATE.read_text(encoding="utf-8")
    plain = _sandbox(autoescape=False).from_string(source)
    html = _sandbox(autoescape=True).from_string(source)
    codes = CodeSpec(length=10).random_bodies(count)
    meter = TreeCpu()
    started = time.perf_counter()
    cpu = meter.seconds()
    rendered = 0
    with (
        open(recipients, encoding="utf-8", newline="") as handle,
        open(out, "w", encoding="utf-8") as output,
    ):
        for row, code in zip(csv.DictReader(handle), codes, strict=True):
            client = PlainClient(row, code)
            context = plain.new_context({"client": client})
            parts = {
                "subject": "".join(plain.blocks["subject"](context)).strip(),
                "text": "".join(plain.blocks["text"](context)),
                "html": "".join(html.blocks["html"](html.new_context({"client": client}))),
            }
            record = {
                "mailing": "pure",
                "recipient": row["id"],
                "to": row["email"],
                "parts": parts,
                "codes": {POOL: code},
            }
            output.write(json.dumps(record, ensure_ascii=False) + "\n")
            rendered += 1
    seconds = time.perf_counter() - started
    cpu = meter.seconds() - cpu
    meter.close()
    return {
        "seconds": seconds,
        "cpu": cpu,
        "server_cpu": 0.0,
        "cpu_how": meter.how,
        "rendered": rendered,
        "peak_self_mb": _rss_mb(resource.RUSAGE_SELF),
        "peak_workers_mb": None,
    }


# -- promomail ----------------------------------------------------------------------


def fill_store(url: str, count: int) -> None:
    engine = open_engine(StoreConfig(url))
    try:
        create_pool(
            engine, PoolSettings("Welcome", description="bench pool"), pool_id=POOL, activate=True
        )
        generate_codes(engine, POOL, count, CodeSpec())
        if is_postgres(engine):
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


def _request(url: str, recipients: str, out: str, workers: int, mailing: str) -> RenderRequest:
    return RenderRequest(
        template_path=str(TEMPLATE),
        recipients_path=recipients,
        mailing_id=mailing,
        db_url=url,
        output=OutputTarget(OutputFormat.JSONL, Path(out)),
        workers=workers,
    )


def promomail_render(url: str, recipients: str, out: str, workers: int) -> dict[str, Any]:
    """One render, its CPU counted over every process it starts (see ``TreeCpu``)
    and, on PostgreSQL, its backends' over the same interval (``PostgresCpu``)."""
    request = _request(url, recipients, out, workers, "bench")
    # Started first: its watcher process stays out of the render's count.
    server = PostgresCpu(url) if url.startswith("postgresql") else None
    meter = TreeCpu()
    try:
        server_before = server.seconds() if server is not None else 0.0
        started = time.perf_counter()
        cpu = meter.seconds()
        summary = render_mailing(request)
        seconds = time.perf_counter() - started
        _stop_worker_server()
        # Whatever the render started and did not wait for still counts.
        stragglers = meter.wait_alone()
        cpu = meter.seconds() - cpu
    finally:
        meter.close()
        if server is not None:
            # Once its backends have ended: what they did up to the end counts.
            server.close(keep_reading=True)
    server_cpu = server.seconds() - server_before if server is not None else 0.0
    if stragglers:
        raise RuntimeError(f"processes of the render still running after it: {stragglers}")
    if not summary.ok:
        raise RuntimeError(f"render did not finish cleanly: {summary.as_dict()}")
    return {
        "seconds": seconds,
        "cpu": cpu,
        "server_cpu": server_cpu,
        "cpu_how": meter.how,
        "server_how": server.how if server is not None else None,
        "rendered": summary.totals.rendered,
        "peak_self_mb": _rss_mb(resource.RUSAGE_SELF),
        # The largest process reaped below this one: the forkserver reaps
        # workers and helpers, this process the forkserver.
        "peak_workers_mb": _rss_mb(resource.RUSAGE_CHILDREN),
    }


def _stop_worker_server() -> None:
    """End the server the render forked its workers from (a child of this process).

    Its workers are its children, not this process's: only once it has
    ended (and reaped them) do their CPU time and peak memory count in
    ``RUSAGE_CHILDREN``.
    """
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if stop is not None:
        stop()


def profile_render(url: str, recipients: str, out: str, top: int) -> str:
    """cProfile of a 1-worker render (in this process); the top entries by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    render_mailing(_request(url, recipients, out, 1, "profiled"))
    profiler.disable()
    report = io.StringIO()
    stats = pstats.Stats(profiler, stream=report)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return report.getvalue()


# -- driver -------------------------------------------------------------------------


def _measure(config: Config, folder: Path, recipients: Path, count: int) -> dict[str, Any]:
    out = str(folder / f"{config.database}-{config.workers}.jsonl")
    if config.database == "bare":
        measured = measure_in_child(bare_render, count)
    elif config.database == "pure":
        measured = measure_in_child(pure_render, str(recipients), out, count)
    else:
        with fresh_store(config.database, folder) as url:
            fill_store(url, count)
            measured = measure_in_child(promomail_render, url, str(recipients), out, config.workers)
    result: dict[str, Any] = measured.result
    assert result["rendered"] == count, result
    Path(out).unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recipients",
        type=int,
        default=200_000,
        help="recipients per render (lower for a quick run)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of a SQLite 1-worker render"
    )
    parser.add_argument("--top", type=int, default=25, help="profile entries to print")
    parser.add_argument(
        "--db", default="sqlite,postgresql", help="databases to render on (comma-separated)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of every step, each paired with a bare render; the median round counts",
    )
    args = parser.parse_args()
    databases = {"bare", "pure", *parse_databases(args.db)}
    configs = [c for c in CONFIGS if c.database in databases]
    count: int = args.recipients
    if count < 1:
        raise SystemExit("--recipients must be at least 1")

    with scratch_folder() as folder:
        recipients = folder / "recipients.csv"
        write_recipients(recipients, count)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        rounds = max(1, args.rounds)
        print(
            f"{count:,} recipients, template {TEMPLATE.name}; each step in its own process, "
            f"{rounds} rounds; {os.cpu_count()} CPUs, load average {load} before the run\n"
        )
        # A shared machine's speed drifts by tens of percent from one minute to
        # the next. So every render is measured right after a bare render of
        # its own, its ratio is taken within that pair, and a step's figure
        # is its median round (the range of the rounds beside it).
        rounds_of: dict[str, list[dict[str, Any]]] = {c.name: [] for c in configs}
        for _round in range(rounds):
            for config in configs:
                bare = _measure(CONFIGS[0], folder, recipients, count)
                result = _measure(config, folder, recipients, count)
                result["ratio"] = bare["seconds"] / result["seconds"]
                result["bare_cpu"] = bare["cpu"]
                result["cpu_ratio"] = bare["cpu"] / (result["cpu"] + result["server_cpu"])
                rounds_of[config.name].append(result)

        _print_wall(configs, rounds_of, count)
        print()
        _print_cpu(configs, rounds_of, count)
        print()

        if args.profile:
            with fresh_store("sqlite", folder) as url:
                fill_store(url, count)
                out = str(folder / "profiled.jsonl")
                print("\ncProfile, promomail SQLite 1 worker:\n")
                print(profile_render(url, str(recipients), out, args.top))


def _median(results: list[dict[str, Any]], key: str) -> tuple[dict[str, Any], str]:
    """The median round by ``key``, and the range of the rounds."""
    ordered = sorted(results, key=lambda r: r[key])
    return ordered[len(ordered) // 2], f"{ordered[0][key]:.2f}-{ordered[-1][key]:.2f}"


def _print_wall(
    configs: list[Config], rounds_of: dict[str, list[dict[str, Any]]], count: int
) -> None:
    rows: list[list[object]] = []
    for config in configs:
        result, spread = _median(rounds_of[config.name], "ratio")
        ratio = result["ratio"]
        peak = max(result["peak_self_mb"], result["peak_workers_mb"] or 0.0)
        verdict = []
        if config.target is not None:
            verdict.append(
                f"{'ok' if ratio >= config.target else 'BELOW'} (>= {config.target:.1f}x)"
            )
        verdict.append("mem ok" if peak < MEMORY_TARGET_MB else "MEM OVER")
        rows.append(
            [
                config.name,
                float(result["seconds"]),
                float(count / result["seconds"]),
                f"{ratio:.2f}x",
                spread,
                float(result["peak_self_mb"]),
                "-" if result["peak_workers_mb"] is None else f"{result['peak_workers_mb']:.0f}",
                ", ".join(verdict),
            ]
        )
    print("Wall clock (median round by its ratio to the bare render just before it):\n")
    print_table(
        [
            "render",
            "seconds",
            "recipients/s",
            "vs bare",
            "rounds",
            "main MB",
            "children MB",
            "wall target",
        ],
        rows,
    )


def _print_cpu(
    configs: list[Config], rounds_of: dict[str, list[dict[str, Any]]], count: int
) -> None:
    rows: list[list[object]] = []
    hows: set[str] = set()
    server_hows: set[str] = set()
    for config in configs:
        result, spread = _median(rounds_of[config.name], "cpu_ratio")
        hows.add(result["cpu_how"])
        if result.get("server_how"):
            server_hows.add(result["server_how"])
        per = 1e6 / count
        verdict = "-"
        if config.cpu_target is not None:
            good = result["cpu_ratio"] >= config.cpu_target
            verdict = f"{'ok' if good else 'BELOW'} (>= {config.cpu_target:.2f})"
        rows.append(
            [
                config.name,
                float(result["bare_cpu"] * per),
                float(result["cpu"] * per),
                float(result["server_cpu"] * per),
                float((result["cpu"] + result["server_cpu"]) * per),
                f"{result['cpu_ratio']:.2f}",
                spread,
                verdict,
            ]
        )
    print(
        "CPU per recipient, us (median round by its ratio); the render counted over "
        f"every process it started ({' / '.join(sorted(hows))}); PostgreSQL's server: "
        f"{' / '.join(sorted(server_hows)) or '-'}:\n"
    )
    print_table(
        [
            "render",
            "bare",
            "render",
            "PG server",
            "total",
            "bare / total",
            "rounds",
            "CPU target",
        ],
        rows,
    )
    if any(how != "cgroup cpuacct" for how in hows):
        print(
            "\n(no writable cgroup v1 cpuacct here: rusage of the process and of the "
            "children it waited for, so processes not waited for are missing)"
        )


if __name__ == "__main__":
    main()
