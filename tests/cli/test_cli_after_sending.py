"""After sending, end to end through the command line: redeem, customer, segment, export.

Every test runs on SQLite and on PostgreSQL (the ``db_url`` fixture) through
click's CliRunner, which does not catch exceptions, so a traceback fails the
test instead of passing as "exit status 1". Real processes are used where
they matter: eight ``promomail redeem`` processes racing for one code, and a
real HTTP server and SMTP server receiving low-stock notices.

The library-level behaviour (every refusal reason, every segment edge case,
every sink failure) is tested in the modules of the library; these tests
follow a campaign's life through the commands a user would type.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from promomail.pools.codes.notifications import SMTP_URL_ENV
from promomail.pools.codes.webhooks import ALLOW_PRIVATE_ENV
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import StoreConfig
from tests.support.campaign_cli import SPRING, CampaignCli, error_line, refusal
from tests.support.cli_helpers import promomail_command
from tests.support.paths import REPO_ROOT
from tests.support.sinks import Inbox, Webhook, closed_port, smtp_inbox, webhook_receiver

ROOT = REPO_ROOT
SAMPLES = ROOT / "sample_templates"

EXPORT_COLUMNS = [
    "issued_at",
    "pool",
    "code",
    "customer",
    "mailing",
    "kind",
    "redeemed",
    "returned_at",
]


def warnings(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]


# --- redeem -----------------------------------------------------------------


def test_redeem_a_single_use_code_once(run: CampaignCli) -> None:
    run.pool("spring", codes=["SPRING-A", "SPRING-B", "SPRING-C"])
    messages, _, _ = run.render(run.template(SPRING), run.recipients(["alice", "bob"]), "m-1")
    alice_code = messages["alice"]["codes"]["spring"]
    bob_code = messages["bob"]["codes"]["spring"]

    redeemed = run("redeem", alice_code, "--customer", "alice", "--order", "o-1", "--json")
    assert redeemed.exit_code == 0, redeemed.stderr
    assert json.loads(redeemed.stdout) == {
        "ok": True,
        "code": alice_code,
        "pool": "spring",
        "issued_to": "alice",
        "mailing": "m-1",
        "redeemed_by": "alice",
        "order": "o-1",
        "replayed": False,
    }
    human = run("redeem", bob_code, "--order", "o-2")
    assert human.exit_code == 0, human.stderr
    assert (
        human.stdout
        == f"Redeemed {bob_code} from pool spring (issued to bob by mailing m-1, order o-2).\n"
    )

    codes_before = run.json("codes", "list", "spring", "--limit", "0")
    again = run("redeem", alice_code, "--customer", "mallory", "--json")
    assert refusal(again) == {"ok": False, "reason": "already redeemed"}
    line = error_line(run("redeem", alice_code, "--customer", "mallory"))
    assert alice_code in line and "already redeemed" in line
    assert refusal(run("redeem", "NO-SUCH-CODE", "--json")) == {
        "ok": False,
        "reason": "unknown code",
    }
    line = error_line(run("redeem", "NO-SUCH-CODE"))
    assert "NO-SUCH-CODE" in line and "unknown code" in line

    # Refusals changed nothing; two codes are redeemed, the third never left the pool.
    assert run.json("codes", "list", "spring", "--limit", "0") == codes_before
    counts = run.pools()["spring"]
    assert (counts["issued"], counts["redeemed"], counts["available"]) == (2, 2, 1)
    assert [r["redeemed_by"] for r in run.customer("alice")["redemptions"]] == ["alice"]
    assert [r["redeemed_by"] for r in run.customer("bob")["redemptions"]] == [None]


def test_require_issued_refuses_a_code_before_it_is_issued(run: CampaignCli) -> None:
    run.pool("vip", "--require-issued", codes=["VIP-1", "VIP-2"])

    early = run("redeem", "VIP-1", "--customer", "carol", "--json")
    assert refusal(early) == {"ok": False, "reason": "never issued"}
    line = error_line(run("redeem", "VIP-2"))
    assert "VIP-2" in line and "never issued" in line
    assert run.pools()["vip"]["redeemed"] == 0

    template = run.template("VIP {{ client.promocode('vip') }}\n")
    messages, _, _ = run.render(template, run.recipients(["carol"]), "vip-1")
    carol_code = messages["carol"]["codes"]["vip"]
    [other] = {"VIP-1", "VIP-2"} - {carol_code}

    accepted = run.json("redeem", carol_code, "--customer", "carol")
    assert (accepted["ok"], accepted["issued_to"], accepted["redeemed_by"]) == (
        True,
        "carol",
        "carol",
    )
    # The code nobody was given is still refused.
    assert refusal(run("redeem", other, "--json"))["reason"] == "never issued"
    assert run.pools()["vip"]["redeemed"] == 1


def test_a_multi_use_code_is_redeemed_every_time(run: CampaignCli) -> None:
    run.pool("summer", "--multi-use", codes=["SUMMER20"])
    template = run.template("Summer: {{ client.promocode('summer') }}\n")
    messages, _, _ = run.render(template, run.recipients(["alice", "bob"]), "summer-1")
    assert {m["codes"]["summer"] for m in messages.values()} == {"SUMMER20"}

    buyers = ["alice", "bob", "carol", None, "alice"]
    answers = []
    for number, buyer in enumerate(buyers):
        options = ["--customer", buyer] if buyer else []
        answers.append(run.json("redeem", "SUMMER20", "--order", f"o-{number}", *options))

    assert all(a["ok"] for a in answers)
    # Attribution names the redeeming customer only when the code was sent to them.
    assert [a["issued_to"] for a in answers] == ["alice", "bob", None, None, "alice"]
    assert [a["redeemed_by"] for a in answers] == buyers
    # The pool counts codes: its one shared code is redeemed, and stays available;
    # the code itself counts every redemption.
    counts = run.pools()["summer"]
    assert (counts["total"], counts["available"], counts["redeemed"]) == (1, 1, 1)
    [code] = run.json("codes", "list", "summer")
    assert code["redemptions"] == len(buyers)
    # A customer's history holds their own redemptions, not other people's.
    assert [r["order"] for r in run.customer("alice")["redemptions"]] == ["o-0", "o-4"]
    assert [r["order"] for r in run.customer("bob")["redemptions"]] == ["o-1"]


# --- eight checkout processes, one code -----------------------------------------


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux /proc)."""
    folder = Path(f"/proc/{pid}/fd")
    try:
        return any(Path(os.readlink(folder / fd)) == path for fd in os.listdir(folder))
    except OSError:  # the process is gone, or a descriptor closed while reading
        return False


Ready = Callable[[Sequence["subprocess.Popen[bytes]"]], bool]


@contextmanager
def code_held(db_url: str, code: str, app_name: str) -> Iterator[Ready]:
    """Hold a lock that every redeemer of ``code`` must wait for, until the block ends.

    Yields a predicate: whether the given processes (started with
    ``PGAPPNAME=app_name``) are all waiting at the lock, as closely as that can
    be observed. PostgreSQL: the code's row is locked ``FOR UPDATE``, and the
    redeemers' conditional updates queue behind it, visible in
    ``pg_stat_activity``. SQLite: the write lock is held, and a redeemer that
    has the database file open is at most a read away from waiting for it in
    ``BEGIN IMMEDIATE``.
    """
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        path = Path(url.database).resolve()
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")

            def sqlite_ready(children: Sequence[subprocess.Popen[bytes]]) -> bool:
                if not Path("/proc/self/fd").is_dir():
                    return True  # cannot look: release once all were started
                return all(_has_open(child.pid, path) for child in children)

            yield sqlite_ready
        finally:
            connection.rollback()
            connection.close()
        return
    engine = create_engine(StoreConfig(db_url).sqlalchemy_url)
    try:
        with engine.connect() as holder:
            transaction = holder.begin()
            holder.execute(
                text("SELECT id FROM codes WHERE code = :code FOR UPDATE"), {"code": code}
            ).one()

            def postgres_ready(children: Sequence[subprocess.Popen[bytes]]) -> bool:
                with engine.connect() as probe:
                    waiting = probe.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE application_name = :app AND wait_event_type = 'Lock'"
                        ),
                        {"app": app_name},
                    ).scalar_one()
                return int(waiting) == len(children)

            yield postgres_ready
            transaction.rollback()
    finally:
        engine.dispose()


def wait_for(
    ready: Callable[[], bool], children: Sequence[subprocess.Popen[bytes]], what: str
) -> None:
    """Poll ``ready`` until it holds; fail early if a child has already ended."""
    deadline = time.monotonic() + 120
    while not ready():
        for child in children:
            if child.poll() is not None:
                _, err = child.communicate()
                pytest.fail(f"a redeemer ended early ({child.returncode}): {err.decode()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _kill_if_running(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.kill()


def test_eight_processes_redeem_one_code_at_the_same_moment(run: CampaignCli, db_url: str) -> None:
    run.pool("spring", codes=["RACE-1", "RACE-2"])
    template = run.template("{{ client.promocode('spring') }}")
    messages, _, _ = run.render(template, run.recipients(["advocate"]), "m-race")
    code = messages["advocate"]["codes"]["spring"]
    app_name = f"promomail-race-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PGAPPNAME": app_name}
    env.pop("PROMOMAIL_DB", None)
    command = promomail_command(db_url, "redeem", code, "--json")

    outcomes: list[tuple[int, dict[str, Any], str]] = []
    with ExitStack() as stack:
        children: list[subprocess.Popen[bytes]] = []
        with code_held(db_url, code, app_name) as ready:
            for i in range(8):
                child = subprocess.Popen(
                    [*command, "--customer", f"friend-{i}", "--order", f"order-{i}"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                )
                children.append(stack.enter_context(child))
                stack.callback(_kill_if_running, child)  # after a failure: none outlives the test
            wait_for(lambda: ready(children), children, "all eight redeemers to wait for the code")
        # The code is released: the eight go at once.
        for child in children:
            out, err = child.communicate(timeout=120)
            outcomes.append((child.returncode, json.loads(out), err.decode()))

    assert all("Traceback" not in err for _, _, err in outcomes)
    winners = [(i, doc) for i, (status, doc, _) in enumerate(outcomes) if status == 0]
    losers = [doc for status, doc, _ in outcomes if status == 1]
    assert len(winners) == 1 and len(losers) == 7, outcomes
    [(index, won)] = winners
    assert won == {
        "ok": True,
        "code": code,
        "pool": "spring",
        "issued_to": "advocate",
        "redeemed_by": f"friend-{index}",
        "order": f"order-{index}",
        "mailing": won["mailing"],
        "replayed": False,
    }
    assert losers == [{"ok": False, "reason": "already redeemed"}] * 7
    [listed] = run.json("codes", "list", "spring", "--state", "redeemed")
    assert (listed["code"], listed["redemptions"]) == (code, 1)
    assert [r["redeemed_by"] for r in run.customer("advocate")["redemptions"]] == [
        f"friend-{index}"
    ]


# --- referrals: per-customer pools, attribution, top-ups ------------------------


def test_referral_codes_are_attributed_and_topped_up(run: CampaignCli) -> None:
    run.pool("referral", "--per-customer", "3", generate=20)
    advocates = run.recipients(["ann", "bob"])

    first, summary, _ = run.render(SAMPLES / "referral.j2", advocates, "ref-1")
    assert summary["new_codes"] == 6
    ann_codes: list[str] = first["ann"]["codes"]["referral"]
    bob_codes: list[str] = first["bob"]["codes"]["referral"]
    assert len(set(ann_codes)) == len(set(bob_codes)) == 3
    assert not set(ann_codes) & set(bob_codes)
    for name, held in (("ann", ann_codes), ("bob", bob_codes)):
        for part in ("text", "html"):
            assert all(code in first[name]["parts"][part] for code in held)

    shared = ann_codes[1]
    redeemed = run.json("redeem", shared, "--customer", "friend", "--order", "o-77")
    assert redeemed == {
        "ok": True,
        "code": shared,
        "pool": "referral",
        "issued_to": "ann",
        "redeemed_by": "friend",
        "order": "o-77",
        "mailing": "ref-1",
        "replayed": False,
    }

    ann = run.customer("ann")
    [referral] = ann["redemptions"]
    assert (referral["code"], referral["issued_to"], referral["redeemed_by"]) == (
        shared,
        "ann",
        "friend",
    )
    assert referral["referral"] is True and referral["order"] == "o-77"
    by_code = {i["code"]: i for i in ann["issuances"]}
    assert set(by_code) == set(ann_codes)
    assert by_code[shared]["redeemed_by"] == ["friend"]
    assert run.customer("bob")["redemptions"] == []
    _check_customer_tables(run, ann_codes, shared)
    assert [r["issued_to"] for r in run.customer("friend")["redemptions"]] == ["ann"]

    second, summary, _ = run.render(SAMPLES / "referral.j2", advocates, "ref-2")
    assert (summary["new_codes"], summary["reused_codes"]) == (1, 5)
    ann_now: list[str] = second["ann"]["codes"]["referral"]
    unredeemed = [c for c in ann_codes if c != shared]
    assert len(ann_now) == 3 and shared not in ann_now
    assert set(unredeemed) < set(ann_now)
    [new_code] = set(ann_now) - set(unredeemed)
    assert new_code not in bob_codes
    assert all(code in second["ann"]["parts"]["text"] for code in ann_now)
    assert second["bob"]["codes"]["referral"] == bob_codes
    assert [i["mailing"] for i in run.customer("ann")["issuances"]].count("ref-2") == 1

    [listed] = run.json("codes", "list", "referral", "--state", "redeemed")
    assert (listed["code"], listed["customer"], listed["mailing"]) == (shared, "ann", "ref-1")
    table = run("codes", "list", "referral", "--state", "redeemed")
    assert table.exit_code == 0 and shared in table.stdout


def _check_customer_tables(run: CampaignCli, ann_codes: Sequence[str], shared: str) -> None:
    """``customer`` for people: aligned tables, the referral named, strangers explained."""
    ann = run("customer", "ann")
    assert ann.exit_code == 0, ann.stderr
    lines = ann.stdout.splitlines()
    assert lines[0] == "Codes of customer ann:"
    header = lines[1]
    column = header.index("redeemed by")
    rows = {line.split()[1]: line for line in lines[2:5]}
    assert set(rows) == set(ann_codes)
    for code, row in rows.items():
        assert row[column:].strip() == ("friend" if code == shared else "-"), (header, row)
    redemptions = lines[lines.index("Redemptions:") + 2]
    assert redemptions.split()[:4] == ["referral", shared, "ann", "friend"]
    bob = run("customer", "bob").stdout.splitlines()
    column = bob[1].index("redeemed by")
    assert all(row[column:] == "-" for row in bob[2:]), bob
    assert "Redemptions:" not in bob

    stranger = run("customer", "zed")
    assert stranger.exit_code == 0
    assert stranger.stdout == "No codes were ever issued to or redeemed by customer 'zed'.\n"
    assert run.customer("zed") == {"customer": "zed", "issuances": [], "redemptions": []}


# --- segments --------------------------------------------------------------------


def _reminder_for_any_recipient(run: CampaignCli) -> str:
    """The sample reminder, for recipients files that have no first_name (a bare segment)."""
    source = (SAMPLES / "reminder.j2").read_text(encoding="utf-8")
    assert "{{ client.first_name }}" in source
    return run.template(
        source.replace("{{ client.first_name }}", "{{ client.first_name|default('friend') }}"),
        "reminder.j2",
    )


def _reissues(history: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (i["pool"], i["code"], i["mailing"]) for i in history["issuances"] if i["kind"] == "reissue"
    ]


def test_a_segment_is_the_recipients_file_of_a_reminder(run: CampaignCli) -> None:
    run.pool("welcome", generate=10)
    run.pool("spring", generate=10)
    welcomed, _, _ = run.render(SAMPLES / "welcome.j2", run.recipients(["c1", "c2", "c3"]), "w-1")
    run.render(run.template(SPRING), run.recipients(["c4"]), "s-1")  # known, never welcomed
    welcome_code = {c: welcomed[c]["codes"]["welcome"] for c in ("c1", "c2", "c3")}

    listed = run("segment", "--issued-from", "welcome", "--format", "csv")
    assert listed.exit_code == 0, listed.stderr
    assert listed.stdout == "id\nc1\nc2\nc3\n"
    assert "3 customers" in listed.stderr
    segment_file = run.folder / "segment.csv"
    segment_file.write_text(listed.stdout, encoding="utf-8")
    reminder = _reminder_for_any_recipient(run)

    for attempt in range(2):  # the same mailing again records nothing new
        reminded, summary, _ = run.render(reminder, str(segment_file), "r-1")
        assert set(reminded) == {"c1", "c2", "c3"}
        assert (summary["rendered"], summary["new_codes"]) == (3, 0), attempt
        for customer, code in welcome_code.items():
            parts = reminded[customer]["parts"]
            assert parts["subject"] == "friend, your welcome discount is waiting"
            assert f"Your personal code is:\n\n    {code}\n" in parts["text"]
            assert f"<code>{code}</code>" in parts["html"]
            assert not (set(welcome_code.values()) - {code}) & set(parts["text"].split())
            assert _reissues(run.customer(customer)) == [("welcome", code, "r-1")], attempt
    assert run.json("mailing", "show", "r-1")["reissues"] == 3
    assert run.pools()["welcome"]["issued"] == 3  # a reminder consumes nothing

    # Another reminder mailing is another showing, recorded once more.
    run.render(reminder, str(segment_file), "r-2")
    assert [m for _, _, m in _reissues(run.customer("c1"))] == ["r-1", "r-2"]
    assert _reissues(run.customer("c4")) == []


def _backdate(db_url: str, mailing: str, days: int) -> None:
    """Move a mailing's issuances into the past, as if it had been sent ``days`` ago."""
    engine = create_engine(StoreConfig(db_url).sqlalchemy_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE issuances SET issued_at = :at WHERE mailing_id = :mailing"),
                {"at": utcnow() - timedelta(days=days), "mailing": mailing},
            )
    finally:
        engine.dispose()


def test_segment_filters(run: CampaignCli, db_url: str) -> None:
    run.pool("welcome", generate=10)
    run.pool("spring", generate=10)
    welcome = run.template("{{ client.promocode('welcome') }}", "welcome.j2")
    run.render(welcome, run.recipients(["ann", "bob"]), "w-old")
    _backdate(db_url, "w-old", days=30)
    run.render(welcome, run.recipients(["bob", "cid"]), "w-new")
    run.render(run.template(SPRING), run.recipients(["cid", "dee"]), "s-1")
    # Issued: ann 1 welcome (old); bob 2 welcome (old, new); cid welcome, spring; dee spring.
    week_ago = (utcnow() - timedelta(days=7)).strftime("%Y-%m-%d")
    tomorrow = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00")

    def ids(*options: str) -> list[str]:
        result = run("segment", *options)
        assert result.exit_code == 0, result.stderr
        listed = result.stdout.splitlines()
        document = run.json("segment", *options)
        assert document == {"count": len(listed), "ids": listed}
        return listed

    assert ids() == ["ann", "bob", "cid", "dee"]
    assert ids("--issued-from", "welcome") == ["ann", "bob", "cid"]
    assert ids("--issued-from", "welcome", "--min-issued", "2") == ["bob"]
    assert ids("--issued-from", "welcome", "--max-issued", "1") == ["ann", "cid"]
    both = ("--issued-from", "welcome", "--issued-from", "spring")
    assert ids(*both, "--min-issued", "2") == ["bob", "cid"]
    assert ids(*both, "--min-issued", "2", "--max-issued", "2") == ["bob", "cid"]
    assert ids("--issued-from", "spring", "--max-issued", "0") == ["ann", "bob"]
    assert ids("--since", week_ago) == ["bob", "cid", "dee"]
    assert ids("--issued-from", "welcome", "--since", week_ago) == ["bob", "cid"]
    assert ids("--issued-from", "welcome", "--since", week_ago, "--min-issued", "2") == []
    assert ids("--since", tomorrow) == []

    as_csv = run("segment", "--issued-from", "spring", "--format", "csv")
    assert as_csv.stdout == "id\ncid\ndee\n"
    assert "2 customers in the segment" in as_csv.stderr

    line = error_line(run("segment", "--issued-from", "nosuch"))
    assert "nosuch" in line
    line = error_line(run("segment", "--min-issued", "3", "--max-issued", "1"))
    assert "--min-issued" in line
    usage = run("segment", "--min-issued", "-1")
    assert usage.exit_code == 2 and "Traceback" not in usage.stderr
    assert run("segment", "--since", "last tuesday").exit_code == 2


# --- export ------------------------------------------------------------------------


def _read_export(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == EXPORT_COLUMNS
        return list(reader)


def _history_rows(run: CampaignCli, customers: Sequence[str]) -> list[dict[str, str]]:
    """The export rows that ``customer --json`` implies, in no particular order."""
    rows = []
    for customer in customers:
        history = run.customer(customer)
        own = {r["code"]: r["redeemed_at"] for r in history["redemptions"]}
        for issued in history["issuances"]:
            rows.append(
                {
                    "issued_at": issued["issued_at"],
                    "pool": issued["pool"],
                    "code": issued["code"],
                    "customer": customer,
                    "mailing": issued["mailing"],
                    "kind": issued["kind"],
                    "redeemed": own.get(issued["code"]) or "",
                    "returned_at": issued["returned_at"] or "",
                }
            )
    return rows


def _sorted(rows: Sequence[dict[str, str]]) -> list[tuple[str, ...]]:
    return sorted(tuple(row[c] for c in EXPORT_COLUMNS) for row in rows)


def test_export_issuances_matches_the_customers_histories(run: CampaignCli) -> None:
    run.pool("welcome", generate=10)
    run.pool("spring", generate=10)
    welcomed, _, _ = run.render(SAMPLES / "welcome.j2", run.recipients(["ann", "bob"]), "w-1")
    run.render(SAMPLES / "reminder.j2", run.recipients(["ann", "bob"]), "r-1")
    sprung, _, _ = run.render(run.template(SPRING), run.recipients(["bob", "cid"]), "s-1")
    run.json("redeem", sprung["cid"]["codes"]["spring"], "--customer", "cid")
    run.json("redeem", welcomed["ann"]["codes"]["welcome"], "--customer", "friend")
    customers = ["ann", "bob", "cid"]

    out = run.folder / "issuances.csv"
    result = run("export", "issuances", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Wrote 6 issuances to {out}.\n"
    rows = _read_export(out)
    assert _sorted(rows) == _sorted(_history_rows(run, customers))
    # Both a customer's own redemption and a friend's show as redeemed.
    redeemed = {(r["customer"], r["mailing"]) for r in rows if r["redeemed"]}
    assert redeemed == {("cid", "s-1"), ("ann", "w-1"), ("ann", "r-1")}

    spring_out = run.folder / "spring.csv"
    assert run.json("export", "issuances", "--pool", "spring", "--out", str(spring_out)) == {
        "file": str(spring_out),
        "rows": 2,
    }
    assert _sorted(_read_export(spring_out)) == _sorted([r for r in rows if r["pool"] == "spring"])
    reminder_out = run.folder / "reminder.csv"
    run.json("export", "issuances", "--mailing", "r-1", "--out", str(reminder_out))
    reminders = _read_export(reminder_out)
    assert {(r["customer"], r["kind"]) for r in reminders} == {
        ("ann", "reissue"),
        ("bob", "reissue"),
    }
    both = run.folder / "both.csv"
    run.json("export", "issuances", "--pool", "spring", "--mailing", "w-1", "--out", str(both))
    assert _read_export(both) == []

    files_before = sorted(p.name for p in run.folder.iterdir())
    missing = run.folder / "missing.csv"
    line = error_line(run("export", "issuances", "--pool", "nosuch", "--out", str(missing)))
    assert "nosuch" in line
    line = error_line(run("export", "issuances", "--mailing", "m-404", "--out", str(missing)))
    assert "m-404" in line
    # An older export at the path is left as it was.
    old = out.read_bytes()
    error_line(run("export", "issuances", "--pool", "nosuch", "--out", str(out)))
    assert out.read_bytes() == old
    assert sorted(p.name for p in run.folder.iterdir()) == files_before


# --- low stock: a real webhook receiver and a real SMTP server ----------------------


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    """A real webhook receiver on 127.0.0.1, which webhooks reach only when allowed."""
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "127.0.0.1")
    with webhook_receiver("/hooks/stock") as received:
        yield received


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """A real SMTP server on 127.0.0.1, named in PROMOMAIL_SMTP_URL."""
    with smtp_inbox("stock@shop.example") as inbox:
        monkeypatch.setenv(SMTP_URL_ENV, inbox.url)
        yield inbox


def test_low_stock_after_renders_notifies_each_sink_once(
    run: CampaignCli, webhook: Webhook, smtp: Inbox
) -> None:
    run.pool(
        "welcome", "--low-stock", "8", "--notify-url", webhook.url,
        "--notify-email", "stock@shop.example", generate=10,
    )  # fmt: skip

    _, first, morning = run.render(SAMPLES / "welcome.j2", run.recipients(["a", "b", "c"]), "w-1")
    assert warnings(morning) == [
        "Warning: pool 'welcome' is low on codes: 7 available, threshold 8"
    ]
    [alert] = first["low_stock"]
    assert alert["notice"] == "notified"
    assert [(d["sink"], d["ok"]) for d in alert["deliveries"]] == [
        ("webhook", True),
        ("email", True),
    ]

    _, second, evening = run.render(SAMPLES / "welcome.j2", run.recipients(["d", "e"]), "w-2")
    assert warnings(evening) == [
        "Warning: pool 'welcome' is low on codes: 5 available, threshold 8"
    ]
    assert [a["notice"] for a in second["low_stock"]] == ["already_notified"]

    [body] = webhook.bodies
    assert (body["event"], body["pool"], body["available"], body["threshold"]) == (
        "low_stock",
        "welcome",
        7,
        8,
    )
    [(_, recipients, mail)] = smtp.messages
    assert recipients == ["stock@shop.example"]
    assert "'welcome'" in mail["Subject"] and "7 available" in mail["Subject"]
    assert "Available codes: 7" in mail.get_content()


def test_low_stock_sinks_that_are_down_only_warn(
    run: CampaignCli, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook_url = f"http://127.0.0.1:{closed_port()}/hooks/stock"
    monkeypatch.setenv(SMTP_URL_ENV, f"smtp://127.0.0.1:{closed_port()}")
    run.pool(
        "welcome", "--low-stock", "8", "--notify-url", hook_url,
        "--notify-email", "stock@shop.example", generate=10,
    )  # fmt: skip

    messages, summary, result = run.render(
        SAMPLES / "welcome.j2", run.recipients(["a", "b", "c"]), "w-1"
    )
    assert summary["rendered"] == 3 and len(messages) == 3
    lines = warnings(result)
    assert lines[0] == "Warning: pool 'welcome' is low on codes: 7 available, threshold 8"
    assert lines[1].startswith(f"Warning: pool 'welcome': low-stock webhook to {hook_url} failed:")
    assert lines[2].startswith(
        "Warning: pool 'welcome': low-stock email to stock@shop.example failed:"
    )
    assert len(lines) == 3

    # Nobody was told, so the next check tries again: a webhook that is up now gets it.
    edited = run("pool", "edit", "welcome", "--notify-url", webhook.url, "--clear", "notify-email")
    assert edited.exit_code == 0, edited.stderr
    _, again, later = run.render(SAMPLES / "welcome.j2", run.recipients(["d"]), "w-2")
    assert warnings(later) == ["Warning: pool 'welcome' is low on codes: 6 available, threshold 8"]
    assert [a["notice"] for a in again["low_stock"]] == ["notified"]
    assert [(b["pool"], b["available"]) for b in webhook.bodies] == [("welcome", 6)]


def test_voiding_a_batch_below_the_threshold_warns(run: CampaignCli, webhook: Webhook) -> None:
    run.pool("spring", "--low-stock", "15", "--notify-url", webhook.url, generate=10)
    run.json("codes", "generate", "spring", "--count", "10")
    assert run.pools()["spring"]["available"] == 20

    result = run("codes", "void", "spring", "--batch", "2")
    assert result.exit_code == 0, result.stderr
    assert "Voided 10 codes of batch 2" in result.stdout
    assert warnings(result) == [
        "Warning: pool 'spring' is low on codes: 10 available, threshold 15"
    ]
    [body] = webhook.bodies
    assert (body["pool"], body["available"], body["threshold"]) == ("spring", 10, 15)

    # Voiding more the same day warns again, without telling the webhook again.
    voided = run("codes", "void", "spring", "--batch", "1", "--json")
    assert voided.exit_code == 0, voided.stderr
    assert [a["available"] for a in json.loads(voided.stdout)["low_stock"]] == [0]
    assert warnings(voided) == ["Warning: pool 'spring' is low on codes: 0 available, threshold 15"]
    assert len(webhook.bodies) == 1
