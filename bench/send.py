"""Sending speed: promomail's sender against a bare ``smtplib`` loop, same relay, same messages.

    python bench/send.py                      # 2,000 messages, 1 and 4 connections
    python bench/send.py --messages 5000 --rounds 5

A local relay (aiosmtpd in a process of its own, answering 250 to
everything without reading the message) receives, at 1 and at 4
connections:

* bare: the messages, built beforehand (outside the timing), handed to
  ``smtplib``'s ``sendmail`` by as many threads as connections, one session
  each, with no state recorded at all;
* promomail: ``send_messages`` reading the render's JSON Lines output
  (``read_output``), building each message, marking it ``sending`` and
  recording it ``sent`` in the in-memory log.

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
from pathlib import Path
from typing import Any

import orjson
from aiosmtpd.controller import Controller

from delivery.outgoing import read_output
from delivery.sending import MemoryLog, send_messages
from pools.relay import SmtpRelay

MAILING = "bench-send"
TEXT = (
    "Hello {name},\n\nSpring is here, and so is your code: {code}.\n"
    "Use it at checkout before the end of the month for 20 % off everything.\n\n"
    "The shop\n"
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


def write_output(path: Path, count: int) -> None:
    with path.open("wb") as out:
        for i in range(count):
            code = f"SPRING-{i:06d}"
            out.write(
                orjson.dumps(
                    {
                        "mailing": MAILING,
                        "recipient": f"c{i}",
                        "to": f"customer{i}@example.test",
                        "parts": {
                            "subject": "Your spring code",
                            "text": TEXT.format(name=f"Customer {i}", code=code),
                        },
                        "codes": {"spring": code},
                        "ref": f"{i:08d}{os.urandom(12).hex()}",
                    },
                    option=orjson.OPT_APPEND_NEWLINE,
                )
            )


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
    started = time.perf_counter()
    summary = send_messages(
        read_output(path, MAILING), SmtpRelay.parse(url), MemoryLog(), connections=connections
    )
    seconds = time.perf_counter() - started
    assert summary.sent == count, summary
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,4")
    args = parser.parse_args()
    os.environ.setdefault("PROMOMAIL_FROM", "shop@example.test")

    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    stop = context.Event()
    server = context.Process(target=_serve, args=(ports, stop), daemon=True)
    server.start()
    url = f"smtp://127.0.0.1:{ports.get(timeout=30)}"
    try:
        with tempfile.TemporaryDirectory(prefix="promomail-bench-") as folder:
            path = Path(folder) / "out.jsonl"
            write_output(path, args.messages)
            built = [(m.sender, m.envelope_to, m.build()) for m in read_output(path, MAILING)]
            print(
                f"{args.messages:,} messages ({sum(len(d) for *_, d in built) // len(built):,} "
                f"bytes each) to a local aiosmtpd relay, best of {args.rounds} rounds"
            )
            print(f"{'connections':>11}  {'bare msg/s':>10}  {'promomail msg/s':>15}  {'ratio':>5}")
            for connections in (int(c) for c in args.connections.split(",")):
                best_bare = best_ours = float("inf")
                for _ in range(args.rounds):
                    best_bare = min(best_bare, bare(url, built, connections))
                    best_ours = min(best_ours, promomail(url, path, connections, args.messages))
                bare_rate = args.messages / best_bare
                our_rate = args.messages / best_ours
                print(
                    f"{connections:>11}  {bare_rate:>10,.0f}  {our_rate:>15,.0f}  "
                    f"{our_rate / bare_rate:>5.2f}"
                )
    finally:
        stop.set()
        server.join(timeout=10)


if __name__ == "__main__":
    main()
