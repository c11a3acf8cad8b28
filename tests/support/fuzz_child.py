"""Runs ``tests/support/fuzz_templates.py`` in a child process and reads its report.

The child caps its own address space, so it cannot be imported here: a test
starts it and takes the JSON document it prints last.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SUPPORT_DIR = Path(__file__).resolve().parent


def run_fuzz_child(mode: str, argument: str) -> dict[str, Any]:
    """``fuzz_templates.py MODE ARGUMENT``'s report; fails the test if the child failed."""
    completed = subprocess.run(
        [sys.executable, str(SUPPORT_DIR / "fuzz_templates.py"), mode, argument],
        capture_output=True,
        text=True,
        check=False,
        cwd=SUPPORT_DIR.parents[1],
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result
