"""``hold`` and ``release`` through the command line, and ``--once-per-customer`` at checkout.

The rules themselves (expiry, replays, every race) are tested on the library
in test_holds.py; these tests follow a checkout through the commands it
runs: what each prints, its exit status, and that a refusal writes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import Engine

from promomail.pools.store.db import StoreConfig, open_engine
from tests.support.cli_helpers import Cli
from tests.support.invariants import stderr_is_clean_error
from tests.support.render_helpers import full_snapshot


@pytest.fixture
def store(db_url: str) -> Iterator[Engine]:
    engine = open_engine(StoreConfig(db_url))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def run(db_url: str, store: Engine) -> Cli:
    return Cli(db_url)


def _pool(run: Cli, pool_id: str, *options: str, codes: str) -> None:
    run.ok("pool", "create", pool_id, "--description", "d", "--activate", *options)
    run.ok("codes", "upload", pool_id, "-", input=codes)


def _refused_json(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    document: dict[str, Any] = json.loads(result.stdout)
    assert set(document) == {"ok", "reason"} and document["ok"] is False
    reason: str = document["reason"]
    return reason


def test_a_checkout_holds_pays_and_redeems(run: Cli, store: Engine) -> None:
    _pool(run, "spring", codes="SP-1\nSP-2\n")
    before = run.json("pool", "show", "spring")

    held = run.json("hold", "SP-1", "--order", "o1", "--customer", "alice")
    assert set(held) == {"ok", "code", "pool", "order", "expires_at", "replayed"}
    assert (held["ok"], held["code"], held["pool"], held["order"], held["replayed"]) == (
        True,
        "SP-1",
        "spring",
        "o1",
        False,
    )
    shown = run.json("pool", "show", "spring")
    assert shown["held"] == 1
    assert {**shown, "held": 0} == {**before, "held": 0}
    assert re.search(r"^\s+held\s+1$", run.ok("pool", "show", "spring").stdout, re.MULTILINE)

    # The checkout retried: the same hold, answered again.
    again = run.json("hold", "SP-1", "--order", "o1", "--for", "90s")
    assert again == {**held, "replayed": True}
    human = run.ok("hold", "SP-1", "--order", "o1", "--for", "1m").stdout
    assert human.startswith("Still held (replayed): SP-1 from pool spring for order o1 until ")

    # Everyone else is refused, dry runs too, and nothing is written.
    snapshot = full_snapshot(store)
    reason = f"held by another order until {held['expires_at'].replace('T', ' ')} UTC"
    assert _refused_json(run("hold", "SP-1", "--order", "o2", "--json")) == reason
    assert _refused_json(run("redeem", "SP-1", "--order", "o2", "--json")) == reason
    assert _refused_json(run("redeem", "SP-1", "--json", "--dry-run")) == reason
    result = run("hold", "SP-1", "--order", "o2")
    assert result.exit_code == 1 and stderr_is_clean_error(result.stderr)
    assert result.stderr.strip().endswith(f"Error: code 'SP-1' cannot be held: {reason}")
    assert full_snapshot(store) == snapshot

    redeemed = run.json("redeem", "SP-1", "--order", "o1", "--customer", "alice")
    assert redeemed["ok"] and not redeemed["replayed"]
    after = run.json("pool", "show", "spring")
    # Redeemed before any mailing gave it out: it leaves the pool, as without a hold.
    assert (after["held"], after["redeemed"], after["available"]) == (
        0,
        1,
        before["available"] - 1,
    )


def test_release_ends_the_hold(run: Cli, store: Engine) -> None:
    _pool(run, "spring", codes="SP-1\n")
    run.json("hold", "SP-1", "--order", "o1")

    snapshot = full_snapshot(store)
    assert _refused_json(run("release", "SP-1", "--order", "o2", "--json")) == (
        "order 'o2' holds nothing on code 'SP-1'"
    )
    result = run("release", "SP-1", "--order", "o2")
    assert result.exit_code == 1 and stderr_is_clean_error(result.stderr)
    assert "nothing released: order 'o2' holds nothing on code 'SP-1'" in result.stderr
    assert full_snapshot(store) == snapshot

    released = run.json("release", "SP-1", "--order", "o1")
    assert set(released) == {"ok", "code", "pool", "order", "released_at"}
    assert (released["ok"], released["pool"], released["order"]) == (True, "spring", "o1")
    assert run.json("pool", "show", "spring")["held"] == 0
    assert _refused_json(run("release", "SP-1", "--order", "o1", "--json")).endswith(
        "holds nothing on code 'SP-1'"
    )
    assert run.json("redeem", "SP-1", "--order", "o2")["ok"]


def test_every_refusal_of_hold_writes_nothing(run: Cli, store: Engine) -> None:
    _pool(run, "spring", codes="SP-USED\nSP-HELD\n")
    _pool(run, "summer", "--multi-use", codes="SUMMER20\n")
    upload = run.json("codes", "upload", "spring", "-", input="SP-VOID\n")
    run.ok("codes", "void", "spring", "--batch", str(upload["batch"]))
    run.json("redeem", "SP-USED", "--order", "o1")
    held = run.json("hold", "SP-HELD", "--order", "o1")

    cases = {
        "NOPE": "unknown code",
        "SP-VOID": "void code",
        "SP-USED": "already redeemed",
        "SP-HELD": f"held by another order until {held['expires_at'].replace('T', ' ')} UTC",
        "SUMMER20": "multi-use codes need no hold",
    }
    for code, reason in cases.items():
        snapshot = full_snapshot(store)
        assert _refused_json(run("hold", code, "--order", "o2", "--json")) == reason, code
        human = run("hold", code, "--order", "o2")
        assert human.exit_code == 1 and stderr_is_clean_error(human.stderr), code
        assert reason in human.stderr
        assert full_snapshot(store) == snapshot, code


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("29s", "from 30 seconds to 24 hours"),
        ("25h", "from 30 seconds to 24 hours"),
        ("2d", "from 30 seconds to 24 hours"),
        ("soon", "is not a duration"),
        ("15 minutes", "is not a duration"),
    ],
)
def test_a_hold_length_out_of_range_is_a_usage_error(
    run: Cli, store: Engine, value: str, says: str
) -> None:
    _pool(run, "spring", codes="SP-1\n")
    snapshot = full_snapshot(store)
    result = run("hold", "SP-1", "--order", "o1", "--for", value, "--json")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Invalid value for '--for': ") and says in last, last
    assert full_snapshot(store) == snapshot


def test_hold_needs_an_order(run: Cli) -> None:
    for command in ("hold", "release"):
        result = run(command, "SP-1")
        assert result.exit_code == 2
        assert "Missing option '--order'" in result.stderr


def test_once_per_customer_at_checkout(run: Cli, store: Engine) -> None:
    _pool(run, "summer", "--multi-use", "--once-per-customer", codes="SUMMER20\n")
    assert run.json("redeem", "SUMMER20", "--customer", "alice", "--order", "o1")["ok"]

    snapshot = full_snapshot(store)
    twice = run("redeem", "SUMMER20", "--customer", "alice", "--order", "o2", "--json")
    assert _refused_json(twice) == "already redeemed by this customer"
    anonymous = run("redeem", "SUMMER20", "--order", "o3")
    assert anonymous.exit_code == 1 and stderr_is_clean_error(anonymous.stderr)
    assert "each customer may redeem this code once: name the customer" in anonymous.stderr
    assert full_snapshot(store) == snapshot

    replay = run.json("redeem", "SUMMER20", "--customer", "alice", "--order", "o1")
    assert replay["replayed"] is True
    assert run.json("redeem", "SUMMER20", "--customer", "bob", "--order", "o4")["ok"]
    shown = run.json("pool", "show", "summer")
    assert (shown["redemptions"], shown["once_per_customer"]) == (2, True)
