"""``send``, ``deliveries`` and ``events import`` end to end (SPEC 8), on both stores.

A mailing is rendered through the command line and sent to a real SMTP relay
in the test process (tests/support/smtp_relay.py: each recipient's address decides
its answer). The relay counts what arrives, so "exactly once" and "at most
the messages in flight again" are counted at the receiving end. Real
``promomail send`` processes are killed with SIGKILL in the middle of a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promomail.pools.after_sending.send_log import UNCOMMITTED_MAX
from promomail.pools.store.db import StoreConfig, open_engine
from tests.support.campaign_cli import SPRING, CampaignCli, error_line
from tests.support.cli_helpers import promomail_command
from tests.support.delivery_helpers import dsn, plain_mail
from tests.support.render_helpers import full_snapshot, wait_until
from tests.support.smtp_relay import Relay, smtp_relay

SENDER = "shop@example.test"


@pytest.fixture(autouse=True)
def sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOMAIL_FROM", SENDER)
    monkeypatch.delenv("PROMOMAIL_SMTP_URL", raising=False)
    monkeypatch.delenv("PROMOMAIL_SMTP_CA", raising=False)


@pytest.fixture
def relay() -> Iterator[Relay]:
    with smtp_relay() as running:
        yield running


@pytest.fixture
def run(db_url: str, tmp_path: Path) -> CampaignCli:
    return CampaignCli(db_url, tmp_path)


def _rendered(run: CampaignCli, ids: list[str], mailing: str = "m", codes: int = 0) -> Path:
    """Mailing ``mailing`` rendered for ``ids`` (addresses ID@example.com) to a JSON Lines file."""
    if "spring" not in run.pools():
        run.pool("spring", codes=[f"SPRING-{i:03d}" for i in range(codes or len(ids))])
    out = run.folder / f"{mailing}.jsonl"
    run.ok(
        "render", run.template(SPRING), "--recipients", run.recipients(ids),
        "--mailing", mailing, "--out", out,
    )  # fmt: skip
    return out


def _refs(path: Path) -> dict[str, str]:
    """recipient → delivery reference of a rendered JSON Lines file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {m["recipient"]: m["ref"] for m in map(json.loads, lines)}


def _send(run: CampaignCli, relay: Relay, *args: str | Path) -> tuple[int, dict[str, Any]]:
    result = run("send", *args, "--smtp", relay.url, "--json")
    assert "Traceback" not in result.stderr
    return result.exit_code, json.loads(result.stdout)


def _snapshot(url: str) -> object:
    engine = open_engine(StoreConfig(url))
    try:
        return full_snapshot(engine)
    finally:
        engine.dispose()


def test_every_message_arrives_once_and_refused_ones_give_their_codes_back(
    run: CampaignCli, relay: Relay
) -> None:
    ids = ["ok0", "ok1", "ok2", "soft0", "drop0", "hard0", "late0", "never0"]
    out = _rendered(run, ids)
    refs = _refs(out)

    status, first = _send(run, relay, "m", "--messages", out, "--retry-for", "0")
    assert status == 1  # deferred and failed messages are left
    assert {k: first[k] for k in ("sent", "deferred", "failed", "skipped", "codes_returned")} == {
        "sent": 3,
        "deferred": 3,
        "failed": 2,
        "skipped": 0,
        "codes_returned": 2,
    }
    # The refused recipients' codes are back: the pool of 8 has 2 again.
    assert run.pools()["spring"]["available"] == 2

    status, second = _send(run, relay, "m", "--messages", out, "--retry-for", "0")
    assert status == 1  # never0 is still deferred
    assert (second["sent"], second["deferred"], second["failed"], second["already"]) == (
        2,
        1,
        0,
        5,
    )
    arrived = relay.refs()
    assert set(arrived) == {refs[r] for r in ("ok0", "ok1", "ok2", "soft0", "drop0")}
    assert set(arrived.values()) == {1}  # each exactly once across the two runs

    states = {d["recipient"]: d["status"] for d in run.json("deliveries", "m")}
    assert states == {
        **dict.fromkeys(["ok0", "ok1", "ok2", "soft0", "drop0"], "sent"),
        "hard0": "failed",
        "late0": "failed",
        "never0": "deferred",
    }
    failed = run.json("deliveries", "m", "--status", "failed")
    assert [d["recipient"] for d in failed] == ["hard0", "late0"]
    assert all(d["answer"].startswith("55") and d["codes_returned"] == 1 for d in failed)
    assert len(run.json("deliveries", "m", "--limit", "2")) == 2
    table = run.ok("deliveries", "m", "--status", "failed").stdout
    assert "hard0" in table and "550 5.1.1 No such user here" in table

    shown = run.json("mailing", "show", "m")["delivery"]
    assert shown == {
        "sent": 5,
        "delivered": 0,
        "bounced": 0,
        "failed": 2,
        "deferred": 1,
        "codes_returned": 2,
    }
    human = run.ok("mailing", "show", "m").stdout
    assert "refused" in human and "codes returned" in human
    assert "codes returned" in run.ok("mailings").stdout.splitlines()[0]

    # The codes that came back are issuable by another mailing.
    returned = {i["code"] for r in ("hard0", "late0") for i in run.customer(r)["issuances"]}
    other = _rendered(run, ["new0", "new1"], mailing="m2")
    given = {json.loads(line)["codes"]["spring"] for line in other.read_text().splitlines()}
    assert given == returned


def test_the_summary_line_and_a_complete_run(run: CampaignCli, relay: Relay) -> None:
    out = _rendered(run, ["ok0", "ok1", "soft0"])
    result = run("send", "m", "--messages", out, "--smtp", relay.url)
    assert result.exit_code == 0, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"Mailing m (all) via {relay.url}: 3 sent, 0 deferred, 0 failed")
    assert "0 codes returned" in summary and "messages/s" in summary
    again = run("send", "m", "--messages", out, "--smtp", relay.url)
    assert again.exit_code == 0 and "0 sent" in again.stderr and "3 done before" in again.stderr
    assert len(relay.arrivals) == 3


def test_rate_and_connections_hold(run: CampaignCli, relay: Relay) -> None:
    ids = [f"ok{i}" for i in range(12)]
    out = _rendered(run, ids)
    status, summary = _send(run, relay, "m", "--messages", out, "--connections", "2", "--rate", "5")
    assert status == 0 and summary["sent"] == 12
    assert relay.most_sessions <= 2
    times = sorted(a.at for a in relay.arrivals)
    # No bursts: any 6 consecutive arrivals span at least a second (5 gaps of 0.2 s).
    assert all(times[i + 5] - times[i] >= 0.95 for i in range(len(times) - 5))


def test_shards_send_what_each_render_shard_wrote(run: CampaignCli, relay: Relay) -> None:
    ids = [f"ok{i}" for i in range(10)]
    out = _rendered(run, ids)
    sent = 0
    for k in (1, 2, 3):
        status, summary = _send(run, relay, "m", "--messages", out, "--shard", f"{k}/3")
        assert status == 0
        sent += summary["sent"]
    assert sent == 10 and set(relay.refs().values()) == {1}
    assert set(relay.refs()) == set(_refs(out).values())


def test_another_mailings_file_is_refused_before_anything_is_sent(
    run: CampaignCli, relay: Relay
) -> None:
    out = _rendered(run, ["ok0", "ok1"])
    before = _snapshot(run.url)
    line = error_line(run("send", "other", "--messages", out, "--smtp", relay.url))
    assert str(out) in line and "line 1" in line and "'other'" in line
    assert relay.arrivals == [] and relay.session_count == 0
    assert _snapshot(run.url) == before


def test_a_refused_login_fails_the_run_without_printing_the_password(
    run: CampaignCli, tmp_path: Path
) -> None:
    out = _rendered(run, ["ok0"])
    before = _snapshot(run.url)
    with smtp_relay(login=("user", "right")) as relay:
        url = relay.url.replace("smtp://", "smtp://user:s3cret-pw@")
        result = run("send", "m", "--messages", out, "--smtp", url)
        line = error_line(result)
        assert "s3cret-pw" not in result.stderr + result.stdout
        assert "user@127.0.0.1" in line
        assert relay.arrivals == []
    assert _snapshot(run.url) == before
    # No relay at all: a clear error naming the setting.
    assert "PROMOMAIL_SMTP_URL" in error_line(run("send", "m", "--messages", out))


def _send_process(url: str, relay: Relay, out: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PROMOMAIL_FROM": SENDER}
    return subprocess.Popen(
        promomail_command(url, "send", "m", "--messages", out, "--smtp", relay.url, *args),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_killed_send_loses_nothing_and_resends_at_most_the_messages_in_flight(
    run: CampaignCli, relay: Relay
) -> None:
    ids = [f"ok{i:02d}" for i in range(30)]
    out = _rendered(run, ids)
    refs = _refs(out)
    process = _send_process(run.url, relay, out, "--rate", "10", "--connections", "2")
    try:
        wait_until(lambda: len(relay.arrivals) >= 8, what="the first messages to arrive")
        # One run per mailing and shard: a second one is refused while the first sends.
        line = error_line(run("send", "m", "--messages", out, "--smtp", relay.url))
        assert "already being sent" in line and f"pid {process.pid}" in line
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    before_rerun = Counter(relay.refs())
    assert 8 <= sum(before_rerun.values()) < 30

    status, summary = _send(run, relay, "m", "--messages", out)
    assert status == 0
    arrived = relay.refs()
    assert set(arrived) == set(refs.values())  # nothing lost
    twice = [ref for ref, n in arrived.items() if n > 1]
    assert all(n <= 2 for n in arrived.values())
    assert len(twice) <= 2  # at most one message in DATA per session when it died
    assert summary["already"] + summary["sent"] == 30
    states = Counter(d["status"] for d in run.json("deliveries", "m"))
    assert states == {"sent": 30}


def test_a_send_killed_at_full_speed_resends_at_most_the_uncommitted_window(
    run: CampaignCli, relay: Relay
) -> None:
    """Without ``--rate`` the answers are committed in groups behind the sessions:
    a kill sends again at most the messages in DATA and the uncommitted ones."""
    ids = [f"ok{i:03d}" for i in range(400)]
    out = _rendered(run, ids)
    process = _send_process(run.url, relay, out, "--connections", "4")
    try:
        wait_until(lambda: len(relay.arrivals) >= 100, what="a hundred messages to arrive")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert _send(run, relay, "m", "--messages", out)[0] == 0
    arrived = relay.refs()
    assert set(arrived) == set(_refs(out).values())  # nothing lost
    twice = [ref for ref, n in arrived.items() if n > 1]
    assert all(n <= 2 for n in arrived.values())
    assert len(twice) <= 4 + UNCOMMITTED_MAX
    assert Counter(d["status"] for d in run.json("deliveries", "m")) == {"sent": 400}


def test_events_import_bounces_once_and_reports_bad_files(run: CampaignCli, relay: Relay) -> None:
    out = _rendered(run, ["ok0", "ok1", "ok2"])
    refs = _refs(out)
    assert _send(run, relay, "m", "--messages", out)[0] == 0
    bounce = run.folder / "bounce.eml"
    bounce.write_bytes(dsn(ref=refs["ok1"]))
    own = run.folder / "events.jsonl"
    own.write_text(
        json.dumps({"ref": refs["ok0"], "type": "delivered", "id": "e-1"})
        + "\n"
        + json.dumps({"ref": "UnknownRef123", "type": "bounce", "permanent": True, "id": "e-2"})
        + "\n",
        encoding="utf-8",
    )

    first = run.json("events", "import", bounce, own)
    assert first == {"applied": 2, "duplicates": 0, "unmatched": 1, "problems": []}
    assert run.pools()["spring"]["available"] == 1  # ok1's code came back
    states = {
        d["recipient"]: (d["status"], d["codes_returned"]) for d in run.json("deliveries", "m")
    }
    assert states == {"ok0": ("delivered", 0), "ok1": ("bounced", 1), "ok2": ("sent", 0)}

    before = _snapshot(run.url)
    again = run.ok("events", "import", bounce, own)
    assert again.stdout.startswith("0 events applied, 2 seen before, 1 about no message")
    assert _snapshot(run.url) == before

    bad = run.folder / "bad.jsonl"
    bad.write_text(
        json.dumps({"ref": refs["ok2"], "type": "delivered", "id": "e-3"}) + "\n{oops\n",
        encoding="utf-8",
    )
    mail = run.folder / "hello.eml"
    mail.write_bytes(plain_mail())
    result = run("events", "import", bad, mail)
    line = error_line(result) if result.stdout == "" else result.stderr.strip().splitlines()[-1]
    assert result.exit_code == 1
    assert line.startswith("Error: 2 items") and f"{bad}, line 2" in line
    assert f"{bad}, line 2:" in result.stderr and f"{mail}:" in result.stderr
    # The good event of the bad file was applied, and only it.
    assert run.json("deliveries", "m", "--status", "delivered")[1]["recipient"] == "ok2"
    assert "Traceback" not in result.stderr


def test_usage_errors_name_the_option(run: CampaignCli, relay: Relay) -> None:
    out = _rendered(run, ["ok0"])
    for option, value in (
        ("--rate", "0"),
        ("--rate", "fast"),
        ("--connections", "0"),
        ("--connections", "33"),
        ("--retry-for", "soon"),
        ("--shard", "3/2"),
    ):
        result = run("send", "m", "--messages", out, "--smtp", relay.url, option, value)
        assert result.exit_code == 2, (option, value, result.stderr)
        assert option in result.stderr and "Traceback" not in result.stderr
    assert relay.arrivals == []
    assert run("deliveries", "m", "--status", "lost").exit_code == 2
    assert error_line(run("deliveries", "nope")).startswith("Error: ")


def test_send_without_a_relay_names_both_ways_to_give_one(
    run: CampaignCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _rendered(run, ["ok0"])
    monkeypatch.delenv("PROMOMAIL_SMTP_URL", raising=False)
    assert error_line(run("send", "m", "--messages", out)) == (
        "Error: no SMTP relay configured: give --smtp URL or set PROMOMAIL_SMTP_URL"
    )
