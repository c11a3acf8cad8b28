"""Sending speed: promomail's sender on the store's log against a bare ``smtplib`` loop.

    python bench/send.py                      # 2,000 messages, 1 and 4 connections
    python bench/send.py --messages 5000 --rounds 5 --stores sqlite

A local relay (aiosmtpd in a process of its own, answering 250 to
everything without reading the message) receives, at 1 and at 4
connections:

* bare: the messages, built beforehand (outside the timing), handed to
  ``smtplib``'s ``sendmail`` by as many threads as connections, one session
  each, with no state recorded at all;
* promomail, for each store (SQLite, PostgreSQL): what ``promomail send``
  does, timed whole: the send run's lease taken (``pools.send_run``), the
  render's JSON Lines output read and checked (``read_output``), each
  message built, and its answer recorded in the store (``DeliveryLog``:
  the relay's 250s committed many to a transaction by a thread of their own,
  the codes' issuances untouched).
  The messages are a real render of a real mailing in that store, and its
  delivery rows are deleted (outside the timing) before every round;
* memory: the same sender on the in-memory log, to show what the store costs.

Runs alternate (bare, promomail, bare, …) so a busy machine slows both
alike; the best round of each is shown, with promomail's rate over the bare
loop's (target: at least 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import smtplib
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from benchlib import DATABASES, fresh_store
from sqlalchemy import Engine, text

from promomail.delivery.outgoing import read_output
from promomail.delivery.sending import MemoryLog, send_messages
from promomail.pools import CodeSpec, PoolSettings, create_pool, generate_codes, send_run
from promomail.pools.relay import SmtpRelay
from promomail.pools.store.db import StoreConfig, open_engine
from promomail.templating import OutputTarget, RenderRequest, render_mailing
from promomail.templating.choices import OutputFormat

MAILING = "bench-send"
TEMPLATE = (
    "{% block subject %}Your spring code{% endblock %}"
    "{% block text %}Hello {{ client.first_name }},\n\n"
    "Spring is here, and so is your code: {{ client.promocode('spring') }}.\n"
    "Use it at checkout before the end of the month for 20 % off everything.\n\n"
    "The shop\n{% endblock %}"
)


class _Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK"


class _Relay(Controller):
    """aiosmtpd on port 0: learn the real port before its self-check."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


def _serve(ports: Any, stop: Any) -> None:
    relay = _Relay(_Accept(), hostname="127.0.0.1", port=0)
    relay.start()
    ports.put(relay.port)
    stop.wait()
    relay.stop()


def render_output(url: str, folder: Path, count: int) -> Path:
    """Mailing MAILING rendered in the store at ``url`` for ``count`` recipients."""
    recipients = folder / "recipients.csv"
    with recipients.open("w", encoding="utf-8") as out:
        out.write("id,email,first_name\n")
        for i in range(count):
            out.write(f"c{i},customer{i}@example.test,Customer {i}\n")
    template = folder / "spring.j2"
    template.write_text(TEMPLATE, encoding="utf-8")
    engine = open_engine(StoreConfig(url))
    try:
        create_pool(
            engine, PoolSettings("Spring", description="bench"), pool_id="spring", activate=True
        )
        generate_codes(engine, "spring", count, CodeSpec())
    finally:
        engine.dispose()
    path = folder / f"out-{url.partition(':')[0]}.jsonl"
    summary = render_mailing(
        RenderRequest(
            template_path=str(template),
            recipients_path=str(recipients),
            mailing_id=MAILING,
            db_url=url,
            output=OutputTarget(OutputFormat.JSONL, path),
        )
    )
    assert summary.ok and summary.totals.rendered == count, summary.as_dict()
    return path


def bare(url: str, messages: list[tuple[str, str, bytes]], connections: int) -> float:
    """Seconds for bare smtplib sessions to send ``messages`` (pre-built), split evenly."""
    relay = SmtpRelay.parse(url)
    sessions = [smtplib.SMTP(relay.host, relay.port, timeout=60) for _ in range(connections)]
    for session in sessions:
        session.ehlo()

    def run(session: smtplib.SMTP, share: list[tuple[str, str, bytes]]) -> None:
        for sender, to, data in share:
            session.sendmail(sender, [to], data)

    threads = [
        threading.Thread(target=run, args=(session, messages[i::connections]))
        for i, session in enumerate(sessions)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    for session in sessions:
        session.quit()
    return seconds


def promomail(url: str, path: Path, connections: int, count: int) -> float:
    """Seconds for the sender alone, on the in-memory log."""
    relay = SmtpRelay.parse(url)
    started = time.perf_counter()
    summary = send_messages(read_output(path, MAILING), relay, MemoryLog(), connections=connections)
    seconds = time.perf_counter() - started
    assert summary.sent == count, summary
    return seconds


def promomail_store(url: str, engine: Engine, path: Path, connections: int, count: int) -> float:
    """Seconds for what ``promomail send`` does, on the store's log; deliveries cleared first."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM deliveries"))
    relay = SmtpRelay.parse(url)
    started = time.perf_counter()
    output = read_output(path, MAILING)
    with send_run(engine, MAILING, "all") as log:
        summary = send_messages(output, relay, log, connections=connections)
    seconds = time.perf_counter() - started
    assert summary.sent == count, summary
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,4")
    parser.add_argument("--stores", default=",".join(DATABASES))
    args = parser.parse_args()
    os.environ.setdefault("PROMOMAIL_FROM", "shop@example.test")

    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    stop = context.Event()
    server = context.Process(target=_serve, args=(ports, stop), daemon=True)
    server.start()
    url = f"smtp://127.0.0.1:{ports.get(timeout=30)}"
    try:
        with tempfile.TemporaryDirectory(prefix="promomail-bench-") as name, ExitStack() as stack:
            folder = Path(name)
            stores: dict[str, tuple[Engine, Path]] = {}
            for database in args.stores.split(","):
                assert database in DATABASES, database
                store = stack.enter_context(fresh_store(database, folder))
                path = render_output(store, folder, args.messages)
                engine = open_engine(StoreConfig(store))
                stack.callback(engine.dispose)
                stores[database] = (engine, path)
            path = next(iter(stores.values()))[1]
            built = [(m.sender, m.envelope_to, m.build()) for m in read_output(path, MAILING)]
            print(
                f"{args.messages:,} rendered messages "
                f"({sum(len(d) for *_, d in built) // len(built):,} bytes each) to a local "
                f"aiosmtpd relay, best of {args.rounds} rounds; msg/s (ratio to bare smtplib)"
            )
            columns = ["memory log", *(f"{d} log" for d in stores)]
            print(f"{'connections':>11}  {'bare':>6}" + "".join(f"  {c:>18}" for c in columns))
            for connections in (int(c) for c in args.connections.split(",")):
                best = dict.fromkeys(["bare", *columns], float("inf"))
                for _ in range(args.rounds):
                    best["bare"] = min(best["bare"], bare(url, built, connections))
                    seconds = promomail(url, path, connections, args.messages)
                    best["memory log"] = min(best["memory log"], seconds)
                    for database, (engine, store_path) in stores.items():
                        seconds = promomail_store(
                            url, engine, store_path, connections, args.messages
                        )
                        key = f"{database} log"
                        best[key] = min(best[key], seconds)
                bare_rate = args.messages / best["bare"]
                cells = "".join(
                    f"  {args.messages / best[c]:>10,.0f} ({args.messages / best[c] / bare_rate:.2f})"
                    for c in columns
                )
                print(f"{connections:>11}  {bare_rate:>6,.0f}{cells}")
    finally:
        stop.set()
        server.join(timeout=10)


if __name__ == "__main__":
    main()
