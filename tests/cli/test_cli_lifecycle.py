"""A code's life after the checkout, through the command line: dry runs, retried
checkouts, roll-backs, and codes that come back from undelivered mailings.

Runs on SQLite and PostgreSQL through click's CliRunner (a traceback fails the
test); the refusal of ``mailing cancel`` without a terminal uses the real
console script with stdin that is not a terminal.
"""

from __future__ import annotations

import json
import subprocess

import pytest

import promomail.commands.mailings
from promomail.pools.store.db import StoreConfig, open_engine
from tests.support.campaign_cli import SPRING, CampaignCli, error_line, refusal
from tests.support.cli_helpers import promomail_command
from tests.support.render_helpers import full_snapshot


def _snapshot(run: CampaignCli) -> object:
    engine = open_engine(StoreConfig(run.url))
    try:
        return full_snapshot(engine)
    finally:
        engine.dispose()


def test_dry_run_answers_like_a_redemption_and_writes_nothing(run: CampaignCli) -> None:
    run.pool("spring", codes=["SP-1", "SP-2"])
    messages, _, _ = run.render(run.template(SPRING), run.recipients(["alice"]), "m-1")
    code = messages["alice"]["codes"]["spring"]

    before = _snapshot(run)
    dry = run.json("redeem", code, "--customer", "alice", "--order", "o-1", "--dry-run")
    human = run("redeem", code, "--order", "o-1", "--dry-run")
    unknown = run("redeem", "NOPE", "--dry-run", "--json")
    assert _snapshot(run) == before
    assert dry == {
        "ok": True,
        "code": code,
        "pool": "spring",
        "issued_to": "alice",
        "mailing": "m-1",
        "redeemed_by": "alice",
        "order": "o-1",
        "replayed": False,
    }
    assert human.stdout.startswith(f"Would redeem {code} from pool spring")
    assert refusal(unknown) == {"ok": False, "reason": "unknown code"}

    assert run.json("redeem", code, "--customer", "alice", "--order", "o-1") == dry
    replay = run.json("redeem", code, "--customer", "alice", "--order", "o-1")
    assert replay == {**dry, "replayed": True}
    assert "(replayed)" in run("redeem", code, "--order", "o-1").stdout
    before = _snapshot(run)
    refused = run("redeem", code, "--order", "o-2", "--dry-run", "--json")
    assert refusal(refused) == {"ok": False, "reason": "already redeemed"}
    assert "would be refused: already redeemed" in error_line(
        run("redeem", code, "--order", "o-2", "--dry-run")
    )
    assert _snapshot(run) == before


def test_unredeem_undoes_one_order(run: CampaignCli) -> None:
    run.pool("spring", codes=["SP-1"])
    run.pool("summer", "--multi-use", codes=["SUMMER20"])
    run.json("redeem", "SP-1", "--customer", "alice", "--order", "o-1")
    for i in range(3):
        run.json("redeem", "SUMMER20", "--customer", f"c{i}", "--order", f"s-{i}")

    undone = run.json("unredeem", "SP-1", "--order", "o-1")
    assert {k: undone[k] for k in ("ok", "code", "pool", "order", "redemptions")} == {
        "ok": True,
        "code": "SP-1",
        "pool": "spring",
        "order": "o-1",
        "redemptions": 0,
    }
    assert undone["rolled_back_at"] is not None
    line = error_line(run("unredeem", "SP-1", "--order", "o-1"))
    assert "'SP-1'" in line and "'o-1'" in line
    assert run.json("redeem", "SP-1", "--customer", "bob", "--order", "o-2")["ok"]
    [first, second] = run.customer("alice")["redemptions"] + run.customer("bob")["redemptions"]
    assert first["rolled_back_at"] is not None and second["rolled_back_at"] is None
    table = run("customer", "alice").stdout
    assert "rolled back" in table and "o-1" in table

    shared = run("unredeem", "SUMMER20", "--order", "s-1")
    assert shared.exit_code == 0 and "2 redemptions left" in shared.stdout
    pools = run.pools()
    assert (pools["summer"]["redeemed"], pools["summer"]["redemptions"]) == (1, 2)
    assert (pools["spring"]["redeemed"], pools["spring"]["redemptions"]) == (1, 1)
    # Without --order only a redemption made without one is undone: bob's has one.
    assert error_line(run("unredeem", "SP-1")) == (
        "Error: code 'SP-1' has no redemption made without an order to roll back"
    )


def test_unredeem_without_an_order_undoes_a_redemption_made_without_one(run: CampaignCli) -> None:
    run.pool("spring", codes=["SP-1"])
    run.pool("summer", "--multi-use", codes=["SUMMER20"])
    run.json("redeem", "SP-1", "--customer", "alice")
    run.json("redeem", "SUMMER20", "--customer", "c1")
    run.json("redeem", "SUMMER20", "--customer", "c2")

    # The console script itself: the option is optional there, not only here.
    undone = subprocess.run(
        promomail_command(run.url, "unredeem", "SP-1"), capture_output=True, text=True
    )
    assert (undone.returncode, undone.stderr) == (0, "")
    assert undone.stdout == (
        "Rolled back the redemption of SP-1 (pool spring) made without an order; "
        "0 redemptions left.\n"
    )
    assert run.json("redeem", "SP-1", "--customer", "bob", "--order", "o-9")["ok"]

    before = _snapshot(run)
    ambiguous = error_line(run("unredeem", "SUMMER20"))
    assert ambiguous == (
        "Error: code 'SUMMER20' has 2 live redemptions made without an order: "
        "which one to roll back is ambiguous, so none was"
    )
    assert _snapshot(run) == before
    assert run.pools()["summer"]["redemptions"] == 2


def _bounces(run: CampaignCli, name: str, header: str, rows: list[str]) -> str:
    path = run.folder / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return str(path)


def test_mailing_return_gives_codes_back_and_a_rerun_replaces_them(run: CampaignCli) -> None:
    run.pool("spring", generate=6)
    template = run.template(SPRING)
    everyone = run.recipients(["ann", "bob", "cid", "dan"])
    first, _, _ = run.render(template, everyone, "m-1")
    run.json("redeem", first["dan"]["codes"]["spring"], "--customer", "dan", "--order", "o-1")
    available = run.pools()["spring"]["available"]

    by_id = _bounces(run, "bounced.csv", "id,reason", ["ann,hard bounce", "dan,hard bounce"])
    returned = run.json("mailing", "return", "m-1", "--recipients", by_id, "--reason", "bounce")
    assert returned == {
        "mailing": "m-1",
        "returned": 1,
        "kept": {"redeemed": 1, "reissued": 0, "multi_use": 0},
        "unmatched": [],
    }
    by_email = _bounces(run, "suppressed.csv", "Email", ["BOB@example.com"])
    human = run("mailing", "return", "m-1", "--recipients", by_email)
    assert human.exit_code == 0, human.stderr
    assert human.stdout.startswith("Mailing m-1: 1 code back in their pools")
    assert run.pools()["spring"]["available"] == available + 2
    shown = run.json("mailing", "show", "m-1")
    assert (shown["codes_issued"], shown["returned"], shown["redeemed"]) == (2, 2, 1)
    assert shown["redemption_rate"] == 0.5
    [ann_issued] = run.customer("ann")["issuances"]
    assert ann_issued["returned_at"] and ann_issued["return_reason"] == "bounce"
    assert "bounce" in run("customer", "ann").stdout

    again, summary, _ = run.render(template, everyone, "m-1")
    assert (summary["new_codes"], summary["reused_codes"]) == (2, 2)
    for name in ("cid", "dan"):
        assert again[name]["codes"] == first[name]["codes"]
    assert [bool(i["returned_at"]) for i in run.customer("ann")["issuances"]] == [True, False]

    out = run.folder / "issuances.csv"
    run.json("export", "issuances", "--mailing", "m-1", "--out", str(out))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].endswith(",returned_at")
    assert sum(1 for line in lines[1:] if not line.endswith(",")) == 2  # the two returned


def test_mailing_return_refusals_change_nothing(run: CampaignCli) -> None:
    run.pool("spring", generate=3)
    run.render(run.template(SPRING), run.recipients(["ann"]), "m-1")
    before = _snapshot(run)
    stranger = _bounces(run, "unknown.csv", "email", ["nobody@example.com"])
    no_column = _bounces(run, "plain.csv", "address_line", ["x"])
    assert "plain.csv, line 1" in error_line(
        run("mailing", "return", "m-1", "--recipients", no_column)
    )
    assert "'m-9'" in error_line(run("mailing", "return", "m-9", "--recipients", stranger))
    assert _snapshot(run) == before
    help_text = run("mailing", "return", "--help").stdout
    assert "customer_id" in help_text and "email_address" in help_text


def test_a_bounce_list_returns_what_matches_and_names_each_line_that_did_not(
    run: CampaignCli,
) -> None:
    run.pool("spring", generate=10)
    everyone = run.recipients(["ann", "bob", "cid", "dan"])
    run.render(run.template(SPRING), everyone, "m-1")
    available = run.pools()["spring"]["available"]
    # An export as Excel writes it in many locales: ';', a byte order mark, CR LF.
    export = run.folder / "bounces.csv"
    export.write_text(
        "\ufeffE-Mail;Reason\r\nANN@example.com;hard\r\nnobody@example.com;hard\r\n"
        "cid@example.com;hard\r\n",
        encoding="utf-8",
    )
    result = run("mailing", "return", "m-1", "--recipients", str(export))
    assert result.exit_code == 1
    assert result.stdout.startswith("Mailing m-1: 2 codes back in their pools")
    assert result.stderr.splitlines() == [
        f"Error: {export}, line 3: no recipient of mailing 'm-1' has the address "
        "'nobody@example.com': nothing was returned for it; the other recipients' codes "
        "went back"
    ]
    assert run.pools()["spring"]["available"] == available + 2

    # Many unknown addresses: a few, a count, the lines; all of them in --json.
    strangers = _bounces(
        run, "day.csv", "email", [f"s{i}@example.com" for i in range(8)] + ["dan@example.com"]
    )
    many = run("mailing", "return", "m-1", "--recipients", strangers, "--json")
    assert many.exit_code == 1
    document = json.loads(many.stdout)
    assert document["returned"] == 1
    assert document["unmatched"] == [
        {"line": i + 2, "address": f"s{i}@example.com"} for i in range(8)
    ]
    lines = many.stderr.splitlines()
    assert lines[0] == (
        f"{strangers}, line 2: no recipient of mailing 'm-1' has the address "
        "'s0@example.com'; nothing returned for it"
    )
    assert lines[3] == "… and 5 more: 8 matched nobody in all, by reason:"
    assert lines[-1] == (
        f"Error: 8 addresses of {strangers} (lines 2, 3, 4, 5, 6, …) match no recipient of "
        "mailing 'm-1': nothing was returned for them; the other recipients' codes went back"
    )


def test_mailing_cancel_asks_first(run: CampaignCli, monkeypatch: pytest.MonkeyPatch) -> None:
    run.pool("spring", generate=4)
    run.render(run.template(SPRING), run.recipients(["ann", "bob"]), "m-1")
    before = _snapshot(run)

    # CliRunner's stdin is no terminal: refused without --yes.
    line = error_line(run("mailing", "cancel", "m-1"))
    assert "--yes" in line
    monkeypatch.setattr(promomail.commands.mailings, "stdin_is_terminal", lambda: True)
    declined = run("mailing", "cancel", "m-1", input="n\n")
    assert declined.exit_code == 1 and "gave 2 codes" in declined.stderr
    assert "not cancelled" in declined.stderr
    assert _snapshot(run) == before

    confirmed = run("mailing", "cancel", "m-1", "--json", input="y\n")
    assert confirmed.exit_code == 0, confirmed.stderr
    assert json.loads(confirmed.stdout)["returned"] == 2
    assert run.pools()["spring"]["available"] == 4
    monkeypatch.setattr(promomail.commands.mailings, "stdin_is_terminal", lambda: False)
    assert run.json("mailing", "cancel", "m-1", "--yes")["returned"] == 0


def test_mailing_cancel_without_a_terminal_needs_yes(run: CampaignCli) -> None:
    run.pool("spring", generate=2)
    run.render(run.template(SPRING), run.recipients(["ann"]), "m-1")
    before = _snapshot(run)

    child = subprocess.run(
        promomail_command(run.url, "mailing", "cancel", "m-1"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert child.returncode == 1 and "Traceback" not in child.stderr
    assert child.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "--yes" in child.stderr and child.stdout == ""
    assert _snapshot(run) == before
    done = subprocess.run(
        promomail_command(run.url, "mailing", "cancel", "m-1", "--yes", "--json"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout)["returned"] == 1
