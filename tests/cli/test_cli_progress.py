"""The progress bar of long work (SPEC 1), seen on a real terminal.

Real ``promomail`` processes run with stderr on a pseudo-terminal
(tests/support/terminal.py): render, codes upload, codes generate and send each
draw a bar with the total, the rate and the time left, starting where an
earlier run left the work. With stderr a pipe, they write their summary and
nothing else, even where the environment asks tools for colours and
terminal output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.campaign_cli import SPRING, CampaignCli
from tests.support.cli_helpers import promomail_command
from tests.support.smtp_relay import Relay, smtp_relay
from tests.support.terminal import Terminal, run_on_terminal

SENDER = "shop@example.test"
#: Environment variables that make rich (and other tools) draw on anything.
FORCING = {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
#: A rate and the time left, as the bar shows them once two advances are in.
RATE_AND_ETA = r"[\d,.]+ ?(?:[kMG]?B)?/s ETA \d+:\d\d:\d\d"


@pytest.fixture(autouse=True)
def sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOMAIL_FROM", SENDER)
    monkeypatch.delenv("PROMOMAIL_SMTP_URL", raising=False)
    for name in (*FORCING, "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run(db_url: str, tmp_path: Path) -> CampaignCli:
    return CampaignCli(db_url, tmp_path)


@pytest.fixture
def relay() -> Iterator[Relay]:
    with smtp_relay() as running:
        yield running


def _ids(count: int, start: int = 0) -> list[str]:
    return [f"ok{n:05d}" for n in range(start, start + count)]


def _render_argv(run: CampaignCli, recipients: str, out: Path, *more: str) -> list[str]:
    return promomail_command(
        run.url, "render", run.template(SPRING), "--recipients", recipients,
        "--mailing", "m", "--out", out, "--chunk-size", "100", *more,
    )  # fmt: skip


def _bar(terminal: Terminal, label: str, total: str) -> list[str]:
    """The drawings of the bar from the first one that shows ``total`` on."""
    assert terminal.returncode == 0, terminal.raw
    assert "Traceback" not in terminal.raw
    frames = [frame for frame in terminal.frames if frame.startswith(label)]
    counted = [i for i, frame in enumerate(frames) if f"/{total} " in frame]
    assert counted, frames
    return frames[counted[0] :]


def _piped(argv: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, **FORCING},
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    return done


# -- render -----------------------------------------------------------------------------


def test_render_on_a_terminal_shows_total_rate_and_time_left(run: CampaignCli) -> None:
    run.pool("spring", generate=2000)
    out = run.folder / "m.jsonl"
    terminal = run_on_terminal(_render_argv(run, run.recipients(_ids(1200)), out, "--json"))
    frames = _bar(terminal, "Rendering", "1,200")
    # Drawn from the first chunk on with the total the preflight counted.
    assert re.search(r" 0/1,200 recipients", frames[0]), frames
    assert any(re.search(rf"1,200/1,200 recipients {RATE_AND_ETA}", f) for f in frames), frames
    # Erased at the end: the summary follows the last drawing, and stdout holds the JSON alone.
    lines = terminal.frames
    assert lines[-2].startswith("Mailing m (all): 1,200 recipients"), lines
    assert lines[-1] == f"Output: {out}"
    assert json.loads(terminal.stdout)["rendered"] == 1200


def test_a_rerun_counts_every_recipient_and_says_who_had_codes(run: CampaignCli) -> None:
    run.pool("spring", generate=2000)
    run.ok(
        "render", run.template(SPRING), "--recipients", run.recipients(_ids(400)),
        "--mailing", "m", "--out", run.folder / "first.jsonl",
    )  # fmt: skip
    # The same mailing again, with 800 more recipients: the output holds all 1,200.
    out = run.folder / "again.jsonl"
    terminal = run_on_terminal(_render_argv(run, run.recipients(_ids(1200)), out))
    frames = _bar(terminal, "Rendering", "1,200")
    assert re.search(r" 0/1,200 recipients .*\(400 already had codes\)", frames[0]), frames
    assert any(re.search(rf"1,200/1,200 recipients {RATE_AND_ETA}", f) for f in frames), frames
    assert terminal.frames[-2].startswith("Mailing m (all): 1,200 recipients, 1,200 rendered")
    assert "800 new codes, 400 reused" in terminal.frames[-2]


def test_render_into_a_pipe_writes_its_summary_alone(run: CampaignCli) -> None:
    run.pool("spring", generate=2000)
    out = run.folder / "m.jsonl"
    done = _piped(_render_argv(run, run.recipients(_ids(1200)), out))
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("Mailing m (all): 1,200 recipients")
    assert lines[0].endswith("recipients/s")
    assert lines[1] == f"Output: {out}"


# -- codes upload and generate ----------------------------------------------------------


def _codes_file(run: CampaignCli, count: int) -> Path:
    path = run.folder / "codes.txt"
    path.write_text("".join(f"UPLOADED-{n:08d}\n" for n in range(count)), encoding="utf-8")
    return path


def test_upload_on_a_terminal_shows_bytes_of_the_total_rate_and_time_left(run: CampaignCli) -> None:
    run.pool("spring")
    path = _codes_file(run, 60_000)  # 1.1 MB, read in many pieces
    terminal = run_on_terminal(promomail_command(run.url, "codes", "upload", "spring", path))
    size = path.stat().st_size / 1e6
    frames = _bar(terminal, "Uploading", f"{size:.1f}")
    assert re.search(rf"0\.0/{size:.1f} MB", frames[0]), frames
    assert any(re.search(rf"{size:.1f}/{size:.1f} MB {RATE_AND_ETA}", f) for f in frames), frames
    assert re.fullmatch(r"Uploaded 60,000 codes .* codes/s", terminal.frames[-1]), terminal.frames


def test_generate_on_a_terminal_shows_the_count_asked_for(run: CampaignCli) -> None:
    run.pool("spring")
    argv = promomail_command(run.url, "codes", "generate", "spring", "--count", "120000")
    frames = _bar(run_on_terminal(argv), "Generating", "120,000")
    assert re.search(r" 0/120,000 codes", frames[0]), frames
    assert any(re.search(rf"120,000/120,000 codes {RATE_AND_ETA}", f) for f in frames), frames


def test_upload_and_generate_into_a_pipe_write_their_summary_alone(run: CampaignCli) -> None:
    run.pool("spring")
    path = _codes_file(run, 60_000)
    uploaded = _piped(promomail_command(run.url, "codes", "upload", "spring", path))
    assert re.fullmatch(r"Uploaded 60,000 codes .* codes/s\n", uploaded.stderr)
    argv = promomail_command(run.url, "codes", "generate", "spring", "--count", "120000")
    generated = _piped(argv)
    assert re.fullmatch(r"Generated 120,000 codes in .* codes/s\n", generated.stderr)


# -- send -------------------------------------------------------------------------------


def test_send_on_a_terminal_starts_from_what_earlier_runs_sent(
    run: CampaignCli, relay: Relay
) -> None:
    run.pool("spring", generate=100)
    first = run.folder / "first.jsonl"
    run.ok(
        "render", run.template(SPRING), "--recipients", run.recipients(_ids(10)),
        "--mailing", "m", "--out", first,
    )  # fmt: skip
    run.ok("send", "m", "--messages", first, "--smtp", relay.url)
    out = run.folder / "all.jsonl"
    run.ok(
        "render", run.template(SPRING), "--recipients", run.recipients(_ids(30)),
        "--mailing", "m", "--out", out,
    )  # fmt: skip
    argv = promomail_command(run.url, "send", "m", "--messages", out, "--smtp", relay.url)
    terminal = run_on_terminal(argv)
    frames = _bar(terminal, "Sending", "30")
    assert re.search(r" 10/30 messages .*\(10 done before\)", frames[0]), frames
    assert any(re.search(rf"30/30 messages {RATE_AND_ETA}", f) for f in frames), frames
    assert re.match(r"Mailing m \(all\) via \S+: 20 sent, .*10 done before", terminal.frames[-1])
    assert len(relay.arrivals) == 30


def test_send_into_a_pipe_writes_its_summary_alone(run: CampaignCli, relay: Relay) -> None:
    run.pool("spring", generate=100)
    out = run.folder / "m.jsonl"
    run.ok(
        "render", run.template(SPRING), "--recipients", run.recipients(_ids(30)),
        "--mailing", "m", "--out", out,
    )  # fmt: skip
    argv = promomail_command(run.url, "send", "m", "--messages", out, "--smtp", relay.url)
    lines = _piped(argv).stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Mailing m (all) via "), lines
    assert lines[0].endswith("messages/s")
