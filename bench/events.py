"""Delivery events applied through the webhook route of a real ``promomail serve``.

    python bench/events.py                          # SQLite and PostgreSQL, 1 and 8 clients
    python bench/events.py --db postgresql --events 4000 --clients 8

For each database a fresh store gets a mailing rendered by the library (one
code each for ``--events`` x routes x levels recipients), and one ``promomail
serve`` process on it, configured with a SendGrid public key. Then, for each
number of concurrent clients, ``--events`` events of each kind, each about a
different message, are posted one per request: permanent bounces (each
marks its message bounced and gives its code back: the most work an event
does) and deliveries (the common event: the message is marked delivered),
to each of:

* ``POST /api/v1/events/promomail`` with a token of scope ``events``;
* ``POST /api/v1/events/sendgrid`` signed with the P-256 key (ECDSA over the
  timestamp and body; signed beforehand, outside the timing).

Clients are keep-alive httpx connections spread over up to four client
processes; each sends its next request as soon as the last is answered.
``GET /healthz`` (no token, one ``SELECT 1``) runs first at each level: the
requests per second of the trivial route, the ceiling of one event per
request on the machine. The table shows events applied per second, p50 and p99 latency and errors
(any answer but 200 with one event applied). Afterwards the store is
checked: every bounce applied bounced one message and gave exactly its one
code back, every delivery marked one message delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import (
    fresh_store,
    parse_databases,
    print_table,
    released_together,
    scratch_folder,
    start_server,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.admin.tokens import create_token
from promomail.pools.choices import Scope
from promomail.pools.codes.generation import CodeSpec, generate_codes
from promomail.pools.store.db import StoreConfig, open_engine
from promomail.templating.choices import OutputFormat
from promomail.templating.mailing.outputs import OutputTarget
from promomail.templating.mailing.request import RenderRequest
from promomail.templating.mailing.run import render_mailing

CLIENT_PROCESSES = 4
ROUTES = ("promomail", "sendgrid")
TEMPLATE = (
    "{% block subject %}Your code{% endblock %}"
    "{% block text %}Hi, your code is {{ client.promocode('bench') }}.{% endblock %}"
)

#: One request: path, body, headers, and the number of events in it.
Post = tuple[str, bytes, dict[str, str], int]


@dataclass(frozen=True)
class Run:
    route: str
    clients: int
    events: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return (self.events - self.errors) / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _requests(
    route: str,
    kind: str,
    refs: list[str],
    batch: int,
    token: str,
    key: ec.EllipticCurvePrivateKey,
    prefix: str,
) -> list[Post]:
    """One request per ``batch`` events (SendGrid posts its events in arrays too)."""
    posts: list[Post] = []
    for first in range(0, len(refs), batch):
        chunk = list(enumerate(refs[first : first + batch], first))
        if route == "promomail":
            events: list[dict[str, Any]] = [
                {"ref": ref, "type": kind, "permanent": kind == "bounce", "id": f"{prefix}-{n}"}
                for n, ref in chunk
            ]
            body = json.dumps({"events": events}).encode()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            posts.append(("/api/v1/events/promomail", body, headers, len(chunk)))
            continue
        events = [
            {
                "email": "r@example.org",
                "timestamp": int(time.time()),
                "event": kind,
                "type": "bounce",
                "reason": "550 5.1.1 user unknown",
                "sg_event_id": f"{prefix}-{n}",
                "promomail_ref": ref,
            }
            for n, ref in chunk
        ]
        body = json.dumps(events).encode()
        stamp = str(int(time.time()))
        signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "Content-Type": "application/json",
        }
        posts.append(("/api/v1/events/sendgrid", body, headers, len(chunk)))
    return posts


async def _client_loop(base: str, posts: list[Post]) -> tuple[list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=base, timeout=60, limits=httpx.Limits(max_connections=1)
    ) as client:
        await client.get("/healthz")  # connected before the clock starts
        for path, body, headers, count in posts:
            started = time.perf_counter()
            try:
                if path == "/healthz":  # the trivial route, for reference
                    answer = await client.get(path)
                    applied = count if answer.status_code == 200 else 0
                else:
                    answer = await client.post(path, content=body, headers=headers)
                    applied = answer.json().get("applied") if answer.status_code == 200 else 0
            except httpx.HTTPError:
                applied = 0
            latencies.append((time.perf_counter() - started) * 1000)
            errors += count - (applied if isinstance(applied, int) else 0)
    return latencies, errors


def _client_process(base: str, post_lists: list[list[Post]], barrier: Any, queue: Any) -> None:
    async def main() -> list[tuple[list[float], int]]:
        loops = [_client_loop(base, posts) for posts in post_lists]
        barrier.wait()
        return await asyncio.gather(*loops)

    queue.put(asyncio.run(main()))


def run_level(base: str, route: str, clients: int, posts: list[Post]) -> Run:
    processes = min(clients, CLIENT_PROCESSES)
    per_client = [posts[i::clients] for i in range(clients)]
    groups = [per_client[p::processes] for p in range(processes)]
    answers, seconds = released_together(_client_process, [(base, group) for group in groups])
    latencies: list[float] = []
    errors = 0
    for per_process in answers:
        for lat, err in per_process:
            latencies.extend(lat)
            errors += err
    return Run(route, clients, sum(post[3] for post in posts), seconds, latencies, errors)


def _render(url: str, folder: Path, recipients: int) -> list[str]:
    template = folder / "bench.j2"
    template.write_text(TEMPLATE, encoding="utf-8")
    listed = folder / "recipients.csv"
    listed.write_text(
        "id,email\n" + "".join(f"c{n:07d},c{n}@example.org\n" for n in range(recipients)),
        encoding="utf-8",
    )
    out = folder / "out.jsonl"
    render_mailing(
        RenderRequest(
            template_path=str(template),
            recipients_path=str(listed),
            mailing_id="bench",
            db_url=url,
            output=OutputTarget(OutputFormat.JSONL, out),
        )
    )
    with out.open(encoding="utf-8") as handle:
        return [json.loads(line)["ref"] for line in handle]


def bench_database(
    database: str, folder: Path, levels: list[int], events: int, kinds: list[str], batch: int
) -> list[tuple[str, Run]]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    env = {"PROMOMAIL_SENDGRID_PUBLIC_KEY": base64.b64encode(public).decode()}
    wanted = events * len(levels) * len(ROUTES) * len(kinds)
    with fresh_store(database, folder) as url:
        engine = open_engine(StoreConfig(url))
        try:
            create_pool(
                engine, PoolSettings("Bench", description="benchmark"), pool_id="bench",
                activate=True,
            )  # fmt: skip
            generate_codes(engine, "bench", wanted, CodeSpec(length=12))
            work = folder / f"render-{database}"
            work.mkdir()
            print(f"  {database}: rendering {wanted:,} messages", file=sys.stderr)
            refs = _render(url, work, wanted)
            token = create_token(engine, "bench-events", Scope.EVENTS).token
            server, base = start_server(url, env=env)
            runs: list[tuple[str, Run]] = []
            try:
                offset = 0
                for level in levels:
                    trivial: list[Post] = [("/healthz", b"", {}, 1)] * events
                    runs.append((database, run_level(base, "healthz -", level, trivial)))
                    for kind in kinds:
                        for route in ROUTES:
                            chunk = refs[offset : offset + events]
                            offset += events
                            prefix = f"{route}-{kind}-{level}"
                            posts = _requests(route, kind, chunk, batch, token, key, prefix)
                            run = run_level(base, f"{route} {kind}", level, posts)
                            runs.append((database, run))
                            print(
                                f"  {database}: {level} clients: {route} {kind} "
                                f"{run.rate:,.0f} events/s ({run.errors} errors)",
                                file=sys.stderr,
                            )
            finally:
                server.send_signal(signal.SIGTERM)
                if server.wait(60) != 0:
                    print("  promomail serve did not exit 0", file=sys.stderr)
            bounces = sum(r.events - r.errors for _, r in runs if r.route.endswith("bounce"))
            deliveries = sum(r.events - r.errors for _, r in runs if r.route.endswith("delivered"))
            with engine.connect() as conn:
                bounced, delivered, returned, available = conn.execute(
                    text(
                        "SELECT (SELECT count(*) FROM deliveries WHERE status = 'bounced'),"
                        " (SELECT count(*) FROM deliveries WHERE status = 'delivered'),"
                        " (SELECT coalesce(sum(codes_returned), 0) FROM deliveries),"
                        " (SELECT count(*) FROM codes WHERE status = 'available')"
                    )
                ).one()
            print(
                f"  {database}: {bounces:,} bounces applied: {bounced:,} messages bounced, "
                f"{returned:,} codes returned, {available:,} available; {deliveries:,} "
                f"deliveries applied: {delivered:,} messages delivered",
                file=sys.stderr,
            )
            if not (bounces == bounced == returned == available and deliveries == delivered):
                raise SystemExit(f"{database}: the events do not add up")
            return runs
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--clients", default="1,8", help="concurrency levels")
    parser.add_argument("--events", type=int, default=2000, help="events per route and level")
    parser.add_argument("--batch", type=int, default=1, help="events per request")
    parser.add_argument(
        "--kinds", default="bounce,delivered", help="bounce (codes go back), delivered or both"
    )
    args = parser.parse_args()
    kinds = [part for part in args.kinds.split(",") if part]
    if not set(kinds) <= {"bounce", "delivered"}:
        parser.error("--kinds: bounce, delivered or both")
    levels = [int(part) for part in args.clients.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    rows: list[list[object]] = []
    with scratch_folder() as folder:
        for database in parse_databases(args.db):
            for db, run in bench_database(database, folder, levels, args.events, kinds, args.batch):
                rows.append(
                    [
                        db,
                        "GET /healthz"
                        if run.route.startswith("healthz")
                        else f"POST /api/v1/events/{run.route.split()[0]}",
                        run.route.split()[1],
                        run.clients,
                        round(run.rate),
                        run.percentile(0.5),
                        run.percentile(0.99),
                        run.errors,
                    ]
                )
    print_table(
        ["database", "route", "event", "clients", "events/s", "p50 ms", "p99 ms", "errors"], rows
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
