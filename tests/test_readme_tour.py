"""The README as a new user meets it: the set-up command, then every command of the tour.

A fresh clone of this repository's HEAD runs the first set-up command (its
install part is this test run's own environment: the installed console
script comes first on PATH) and then every shell block the README marks
``<!-- tour -->``, as written, in order, from the clone's folder. A block
fails on a non-zero exit or any ``Error:`` line. Every other shell block is
listed below with the reason it is not run, so a new block cannot escape.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli_helpers import promomail_script

ROOT = Path(__file__).resolve().parent.parent
TOUR_MARK = "<!-- tour -->"
#: What the first set-up command does besides running the demo: done once for
#: this test run, by the environment whose console script is on PATH.
INSTALL_STEPS = (
    "python3 -m venv .venv",
    ". .venv/bin/activate",
    'pip install -e ".[dev]"',
)
DEMO_STEP = "bash sample_templates/demo.sh"
#: Shell blocks not run, by their first line, and why.
NOT_RUN = {
    ". .venv/bin/activate && python -m pytest -n 2": "the second set-up command: this suite",
    "python3 -m venv .venv && .venv/bin/pip install .": (
        "installs packages (tests/test_first_hour.py runs it with --dry-run)"
    ),
    "export PROMOMAIL_SNS_TOPICS=arn:aws:sns:eu-west-1:123456789012:ses-events": (
        "a server on a public address behind a TLS proxy, with real provider keys"
    ),
    "export PROMOMAIL_SMTP_URL='smtp://mailer:PASSWORD@smtp.example.com:587'  # or --smtp URL": (
        "needs an SMTP relay of the reader's own and their customers' mailing"
    ),
}
#: The service example listens on the port it names.
SERVICE_PORT = 8025
BLOCK_TIMEOUT = 180


@dataclass(frozen=True)
class Block:
    first_line: str
    text: str
    in_tour: bool


def shell_blocks(readme: str) -> list[Block]:
    """Every ```sh block of the README, in order, and whether the tour mark precedes it."""
    blocks = []
    for match in re.finditer(r"(?ms)^([^\n]*)\n```sh\n(.*?)^```", readme):
        text = match.group(2)
        blocks.append(Block(text.splitlines()[0], text, match.group(1).strip() == TOUR_MARK))
    return blocks


def setup_commands(readme: str) -> list[str]:
    """The two set-up commands: the first two shell blocks, one line each."""
    blocks = shell_blocks(readme)[:2]
    return [block.text.strip() for block in blocks]


def _environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "HOME": str(home)}
    env["PATH"] = f"{promomail_script().parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PROMOMAIL_DB", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def run_block(script: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """``bash -e`` on the block; its output (stdout and stderr), and every process it
    left running (a server sent to the background) stopped with it."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as output:
        process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=BLOCK_TIMEOUT)
        finally:
            _stop_group(process.pid)
        output.seek(0)
        return code, output.read()


def _stop_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    # A server finishes its requests in flight, then exits; wait for the port.
    for _ in range(100):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_every_shell_block_is_in_the_tour_or_says_why_not() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = shell_blocks(readme)
    setup = blocks[0]
    assert setup.first_line.endswith(DEMO_STEP)
    left_out = {b.first_line for b in blocks[1:] if not b.in_tour}
    assert left_out == set(NOT_RUN)
    assert sum(b.in_tour for b in blocks) >= 3


def test_the_tour_runs_as_written_in_a_fresh_clone(tmp_path: Path) -> None:
    if not _port_free(SERVICE_PORT):
        pytest.fail(f"port {SERVICE_PORT}, which the README's service example uses, is taken")
    clone = tmp_path / "promomail"
    subprocess.run(
        ["git", "clone", "--quiet", str(ROOT), str(clone)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    readme = (clone / "README.md").read_text(encoding="utf-8")
    env = _environment(tmp_path)

    steps = setup_commands(readme)[0].split(" && ")
    assert tuple(steps[:-1]) == INSTALL_STEPS and steps[-1] == DEMO_STEP
    code, output = run_block(DEMO_STEP, clone, env)
    assert code == 0 and "Error:" not in output, output

    ran = []
    for block in shell_blocks(readme):
        if not block.in_tour:
            continue
        code, output = run_block(block.text, clone, env)
        assert code == 0, f"{block.first_line!r} exited {code}:\n{output}"
        errors = [line for line in output.splitlines() if "Error:" in line]
        assert not errors, f"{block.first_line!r}:\n{output}"
        ran.append((block.first_line, output))

    service = next(output for first, output in ran if first.startswith("promomail serve"))
    # The example's redemption answered 201 with the code the demo gave cust-003.
    assert '"code":"WELCOME-BCQQCHCU"' in service and '"replayed":false' in service, service
    assert "POST /api/v1/redemptions 201" in service, service
    tour = next(output for first, output in ran if first.startswith("# A pool"))
    assert "redeemed by cust-001, order 1003" in tour, tour
