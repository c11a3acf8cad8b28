"""A reminder mailing end to end, through the real command line.

Welcome mailing, some codes used and some messages bounced, then
``promomail segment --unredeemed-from welcome --recipients FILE > reminder.csv``
and ``promomail render reminder.j2 --recipients reminder.csv``: each
reminder shows its customer their own code, only those who can still use
it get one, and the follow-up file is the original's rows, byte for byte.
The segment and the renders run as real processes, as a shell runs them;
the set-up goes through CliRunner. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import store_location
from tests.support.cli_helpers import Cli, promomail_command
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
SAMPLES = ROOT / "sample_templates"
TIMEOUT = 120

#: The welcome mailing's recipients, as a CRM exports them: a byte order mark, CR LF,
#: quoted commas and quotes, a line break inside a value, spaces around an id, a
#: repeated id (the first row counts), a blank line, no line end at the very end.
ROWS = [
    "\ufeffid,email,first_name,notes\r\n",
    'ann,ann@example.com,"Ann, the first","says ""hi"""\r\n',
    "bob,bob@example.com,Bob,\r\n",
    'cat,cat@example.com,Cat,"two\r\nlines"\r\n',
    " dan ,dan@example.com,Dan,spaces around the id\r\n",
    "eve,eve@example.com,Ève,bounces\r\n",
    "fay,fay@example.com,Fay,\u4e2d\u6587\r\n",
    "gus,gus@example.com,Gus,\r\n",
    "ann,other@example.com,Ann again,a repeat\r\n",
    "\r\n",
    "hal,hal@example.com,Hal,last line",
]
PEOPLE = ["ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal"]


def _row(customer: str) -> str:
    return next(r for r in ROWS if r.split(",", 1)[0].strip() == customer)


def _run(
    db_url: str, *args: str | Path, stdout: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``promomail ARGS`` as its own process; with ``stdout``, as ``> FILE`` in a shell."""
    command = promomail_command(db_url, *args)
    if stdout is None:
        return subprocess.run(command, capture_output=True, timeout=TIMEOUT, check=False)
    with stdout.open("wb") as handle:
        return subprocess.run(
            command, stdout=handle, stderr=subprocess.PIPE, timeout=TIMEOUT, check=False
        )


def _ok(done: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    return done


def _messages(path: Path) -> dict[str, dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {m["recipient"]: m for m in map(json.loads, lines)}


@pytest.fixture
def welcomed(db_url: str, tmp_path: Path) -> dict[str, Any]:
    """A welcome mailing to PEOPLE; dan used his code, a friend used gus's, eve's bounced.

    The soonest-expiring code ends in three days, the next in forty; the others never.
    """
    run = Cli(db_url)
    run.ok("pool", "create", "Welcome", "--id", "welcome", "--description", "20%", "--activate")
    now = utcnow()
    codes = tmp_path / "codes.csv"
    codes.write_text(
        "code,available_till\n"
        f"W-SOON,{(now + timedelta(days=3)).isoformat(timespec='seconds')}\n"
        f"W-LATER,{(now + timedelta(days=40)).isoformat(timespec='seconds')}\n"
        + "".join(f"W-{i},\n" for i in range(1, 9)),
        encoding="utf-8",
    )
    run.ok("codes", "upload", "welcome", str(codes))
    recipients = tmp_path / "people.csv"
    recipients.write_bytes("".join(ROWS).encode("utf-8"))
    out = tmp_path / "welcome.jsonl"
    _ok(
        _run(
            db_url,
            "render",
            SAMPLES / "welcome.j2",
            "--recipients",
            recipients,
            "--mailing",
            "welcome-1",
            "--out",
            out,
        )
    )
    code = {c: m["codes"]["welcome"] for c, m in _messages(out).items()}
    assert sorted(code) == PEOPLE and len(set(code.values())) == len(PEOPLE)
    run.ok("redeem", code["dan"], "--customer", "dan", "--order", "1001")
    run.ok("redeem", code["gus"], "--customer", "a-friend", "--order", "1002")
    bounces = tmp_path / "bounces.csv"
    bounces.write_text("id\neve\n", encoding="utf-8")
    run.ok("mailing", "return", "welcome-1", "--recipients", str(bounces), "--reason", "bounce")
    return {"run": run, "recipients": recipients, "code": code, "folder": tmp_path}


def test_a_reminder_shows_each_customer_their_own_code(
    db_url: str, welcomed: dict[str, Any]
) -> None:
    folder: Path = welcomed["folder"]
    code: dict[str, str] = welcomed["code"]
    holders = ["ann", "bob", "cat", "fay", "hal"]  # dan and gus's codes used, eve's returned

    reminder_recipients = folder / "reminder-recipients.csv"
    listed = _ok(
        _run(
            db_url,
            "segment",
            "--unredeemed-from",
            "welcome",
            "--recipients",
            welcomed["recipients"],
            stdout=reminder_recipients,
        )
    )
    assert reminder_recipients.read_bytes() == "".join(
        [ROWS[0], *(_row(c) for c in holders)]
    ).encode("utf-8")
    assert f"5 of 8 recipients of {welcomed['recipients']} in the segment" in listed.stderr.decode()

    out = folder / "reminder.jsonl"
    rendered = _ok(
        _run(
            db_url,
            "render",
            SAMPLES / "reminder.j2",
            "--recipients",
            reminder_recipients,
            "--mailing",
            "reminder-1",
            "--out",
            out,
            "--json",
        )
    )
    summary = json.loads(rendered.stdout)
    assert (summary["rendered"], summary["new_codes"], summary["failed"]) == (5, 0, 0)
    messages = _messages(out)
    assert sorted(messages) == holders
    names = {"ann": "Ann, the first", "bob": "Bob", "cat": "Cat", "fay": "Fay", "hal": "Hal"}
    for customer, message in messages.items():
        parts = message["parts"]
        assert parts["subject"] == f"{names[customer]}, your welcome discount is waiting"
        assert f"Your personal code is:\n\n    {code[customer]}\n" in parts["text"]
        assert f"<code>{code[customer]}</code>" in parts["html"]
        others = set(code.values()) - {code[customer]}
        assert not any(other in parts["text"] + parts["html"] for other in others)
        assert message["to"] == f"{customer}@example.com"
        assert message["codes"] == {}  # shown again, nothing new handed out
    # The reminder issued nothing; it recorded that each code was shown again.
    pools = {p["id"]: p for p in welcomed["run"].json("pool", "list")}
    assert pools["welcome"]["issued"] == 7  # eight sent, eve's came back
    assert welcomed["run"].json("mailing", "show", "reminder-1")["reissues"] == 5


def test_a_reminder_for_codes_that_expire_soon(db_url: str, welcomed: dict[str, Any]) -> None:
    folder: Path = welcomed["folder"]
    code: dict[str, str] = welcomed["code"]
    soon = [c for c, value in code.items() if value == "W-SOON"]
    later = [c for c, value in code.items() if value == "W-LATER"]
    assert len(soon) == len(later) == 1
    target = folder / "expiring.csv"
    done = _ok(
        _run(
            db_url,
            "segment",
            "--unredeemed-from",
            "welcome",
            "--expiring-within",
            "7d",
            "--recipients",
            welcomed["recipients"],
            "--out",
            target,
            "--json",
        )
    )
    assert json.loads(done.stdout) == {
        "recipients_file": str(welcomed["recipients"]),
        "recipients": 8,
        "rows": 1,
        "out": str(target),
    }
    assert target.read_bytes() == (ROWS[0] + _row(soon[0])).encode("utf-8")
    ids = _ok(_run(db_url, "segment", "--unredeemed-from", "welcome", "--expiring-within", "6w"))
    assert ids.stdout.decode().split() == sorted(soon + later)


def _refused(result: Result, status: int) -> str:
    assert result.exit_code == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout_bytes == b""
    return result.stderr.strip().splitlines()[-1]


def test_refusals_name_what_is_wrong_and_write_nothing(
    db_url: str, welcomed: dict[str, Any]
) -> None:
    run: Cli = welcomed["run"]
    folder: Path = welcomed["folder"]
    people = str(welcomed["recipients"])
    usage = {
        "--format": ["--recipients", people, "--format", "csv"],
        "--json prints the summary": ["--recipients", people, "--json"],
        "--out goes with --recipients": ["--out", str(folder / "x.csv")],
        "'7m' is not an expiry window": ["--expiring-within", "7m"],
    }
    for expected, options in usage.items():
        line = _refused(run("segment", "--unredeemed-from", "welcome", *options), 2)
        assert expected in line, (options, line)
    line = _refused(run("segment", "--expiring-within", "7d"), 2)
    assert "--expiring-within narrows a reminder segment" in line
    assert "--unredeemed-from" in line

    line = _refused(run("segment", "--unredeemed-from", "nope", "--recipients", people), 1)
    assert line == f"Error: pool 'nope' does not exist in the store {store_location(run.url)}"
    broken = folder / "broken.csv"
    broken.write_bytes(b"id,first_name\nann,Ann\nbob,\xff\n")
    line = _refused(run("segment", "--unredeemed-from", "welcome", "--recipients", broken), 1)
    assert line.startswith(f"Error: {broken}, line 3, column 2")
    line = _refused(
        run(
            "segment",
            "--unredeemed-from",
            "welcome",
            "--recipients",
            people,
            "--out",
            str(folder / "reminder.jsonl"),
        ),
        1,
    )
    assert "a render would read this file as JSON Lines" in line
    assert not (folder / "reminder.jsonl").exists()
