"""Sending through a real SMTP relay on 127.0.0.1 (tests/support/smtp_relay.py decides its answers)."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from promomail.delivery.outgoing import OutgoingMessage, read_output
from promomail.delivery.sending import MemoryLog, Outcome, SendAborted, SendState, send_messages
from promomail.pools.relay import SmtpRelay
from tests.support.outgoing_helpers import addresses, jsonl_output
from tests.support.smtp_relay import Relay, smtp_relay

MAILING = "spring-sale"


@pytest.fixture(autouse=True)
def sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOMAIL_FROM", "shop@example.test")
    monkeypatch.delenv("PROMOMAIL_SMTP_CA", raising=False)


@pytest.fixture
def relay() -> Iterator[Relay]:
    with smtp_relay() as running:
        yield running


def messages(tmp_path: Path, to: Sequence[str | None]) -> list[OutgoingMessage]:
    return list(read_output(jsonl_output(tmp_path / "out.jsonl", MAILING, to), MAILING))


def refs_to(batch: Sequence[OutgoingMessage], prefix: str) -> set[str]:
    return {m.ref for m in batch if m.to is not None and m.to.startswith(prefix)}


def test_every_message_arrives_once_across_runs_and_deferred_ones_go_next_time(
    tmp_path: Path, relay: Relay
) -> None:
    to = [*addresses("ok", count=5), *addresses("soft", "drop", "hard", count=2)]
    batch = messages(tmp_path, [*to, "late0@example.test", "never0@example.test", None])
    log = MemoryLog()
    outcomes: list[Outcome] = []

    first = send_messages(
        batch, SmtpRelay.parse(relay.url), log, connections=2, retry_for=0, progress=outcomes.append
    )

    assert (first.sent, first.deferred, first.failed, first.skipped) == (5, 5, 3, 1)
    assert first.skipped_messages == (("r13", "the message has no address (to)"),)
    assert sorted(o.recipient for o in outcomes) == sorted(m.recipient for m in batch)
    states = {ref: state for ref, (state, _) in log.states.items()}
    assert {r for r, s in states.items() if s is SendState.SENT} == refs_to(batch, "ok")
    assert {r for r, s in states.items() if s is SendState.FAILED} == refs_to(
        batch, "hard"
    ) | refs_to(batch, "late")
    assert log.states[min(refs_to(batch, "hard"))][1] == "550 5.1.1 No such user here"
    assert log.states[min(refs_to(batch, "late"))][1] == "554 5.7.1 Message refused"
    assert log.states[min(refs_to(batch, "soft"))][1].startswith("451 4.3.0")
    assert log.states[min(refs_to(batch, "drop"))][1].startswith("connection lost")

    second = send_messages(batch, SmtpRelay.parse(relay.url), log, connections=2, retry_for=0)

    assert (second.sent, second.deferred, second.failed, second.already) == (4, 1, 0, 8)
    assert relay.refs() == Counter(
        {ref: 1 for ref in refs_to(batch, "ok") | refs_to(batch, "soft") | refs_to(batch, "drop")}
    )
    # Each accepted message was marked as handed over before the relay took it.
    for state, ref, _ in log.events:
        if state == "sent":
            assert log.events.index(("sending", ref, "")) < log.events.index((state, ref, _))


def test_deferred_messages_are_retried_within_the_run(tmp_path: Path, relay: Relay) -> None:
    batch = messages(tmp_path, addresses("soft", "drop", "never", count=2))
    log = MemoryLog()
    outcomes: list[Outcome] = []

    summary = send_messages(
        batch,
        SmtpRelay.parse(relay.url),
        log,
        retry_for=0.5,
        backoff=0.02,
        progress=outcomes.append,
    )

    assert (summary.sent, summary.deferred) == (4, 2)
    assert relay.refs() == Counter({r: 1 for r in refs_to(batch, "soft") | refs_to(batch, "drop")})
    attempts = {o.recipient: o.attempts for o in outcomes}
    assert {attempts[m.recipient] for m in batch if m.ref in refs_to(batch, "soft")} == {2}
    assert min(attempts[m.recipient] for m in batch if m.ref in refs_to(batch, "never")) > 2


@pytest.mark.parametrize("connections", [1, 3])
def test_at_most_the_given_sessions_each_reused(
    tmp_path: Path, relay: Relay, connections: int
) -> None:
    batch = messages(tmp_path, addresses("ok", count=60))

    summary = send_messages(batch, SmtpRelay.parse(relay.url), MemoryLog(), connections=connections)

    assert summary.sent == 60
    assert relay.refs() == Counter({m.ref: 1 for m in batch})
    assert 1 <= relay.most_sessions <= connections
    assert relay.session_count <= connections


def test_the_rate_holds_in_every_second(tmp_path: Path, relay: Relay) -> None:
    rate = 20
    batch = messages(tmp_path, addresses("ok", count=45))

    summary = send_messages(
        batch, SmtpRelay.parse(relay.url), MemoryLog(), connections=4, rate=rate
    )

    assert summary.sent == 45
    times = sorted(arrival.at for arrival in relay.arrivals)
    # The relay's own clock, with slack for the jitter between the sender's
    # slot and the arrival on a busy machine: a burst would put far more in.
    for i, start in enumerate(times):
        in_window = bisect.bisect_left(times, start + 1.0 - 0.1) - i
        assert in_window <= rate, (i, in_window)
    assert (len(times) - 1) / (times[-1] - times[0]) <= rate * 1.05


class CrashingLog(MemoryLog):
    """Dies (as a killed process would) when recording the ``crash_at``-th sent message."""

    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.crash_at = crash_at
        self.sent = 0

    def record(self, ref: str, recipient: str, state: SendState, answer: str) -> int:
        if state is SendState.SENT:
            self.sent += 1
            if self.sent == self.crash_at:
                raise SystemExit("killed")
        return super().record(ref, recipient, state, answer)


def test_after_a_crash_only_the_message_in_flight_goes_out_again(
    tmp_path: Path, relay: Relay
) -> None:
    batch = messages(tmp_path, addresses("ok", count=10))
    crashing = CrashingLog(crash_at=4)

    with pytest.raises(SystemExit):
        send_messages(batch, SmtpRelay.parse(relay.url), crashing, connections=1)
    [in_flight] = crashing.in_flight

    log = MemoryLog()
    log.states = dict(crashing.states)
    summary = send_messages(batch, SmtpRelay.parse(relay.url), log, connections=1)

    assert (summary.sent, summary.already) == (7, 3)
    arrived = relay.refs()
    assert arrived[in_flight] == 2
    assert arrived == Counter({m.ref: 1 for m in batch}) + Counter({in_flight: 1})


def test_a_sender_the_relay_refuses_stops_the_run_and_fails_no_one(
    tmp_path: Path, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMOMAIL_FROM", "blocked@example.test")
    batch = messages(tmp_path, addresses("ok", count=5))
    log = MemoryLog()

    with pytest.raises(SendAborted, match=r"refused MAIL FROM .*550 5\.7\.1"):
        send_messages(batch, SmtpRelay.parse(relay.url), log)

    assert log.events == []
    assert relay.arrivals == []


def test_a_relay_that_cannot_be_reached_fails_before_anything_is_marked(
    tmp_path: Path, relay: Relay
) -> None:
    batch = messages(tmp_path, addresses("ok"))
    log = MemoryLog()
    down = SmtpRelay.parse(relay.url)
    closed = SmtpRelay(down.host, 1, down.tls)
    with pytest.raises(SendAborted, match=r"cannot reach the relay smtp://127\.0\.0\.1:1:"):
        send_messages(batch, closed, log)
    assert log.events == []
