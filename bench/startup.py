"""Start-up cost of the command line, next to the imports it cannot avoid.

A checkout script that calls ``promomail redeem`` per code, or a shell loop
over ``pool show``, pays the interpreter start and the imports every time.
This prints, in one run and alternating the commands so a busy machine
slows them alike, the median wall time of:

* ``python -c "import click"`` — the floor for ``promomail --help``;
* ``python -c "import sqlalchemy.orm"`` — the floor for any store command;
* ``promomail --help`` and ``promomail redeem CODE`` (an unknown code on a
  migrated SQLite store, so the run touches the database but changes nothing).

Targets: ``--help`` at most 3x importing click, ``redeem`` at most 1.6x
importing ``sqlalchemy.orm``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _promomail() -> list[str]:
    beside = Path(sys.executable).with_name("promomail")
    found = str(beside) if beside.exists() else shutil.which("promomail")
    return [found] if found else [sys.executable, str(Path(__file__).parents[1] / "cli.py")]


def _wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="Runs of each command.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="promomail-startup-") as folder:
        db = ["--db", f"sqlite:///{Path(folder) / 'startup.db'}"]
        promomail = _promomail()
        # Create and migrate the store once, so the timed runs measure start-up only.
        subprocess.run([*promomail, *db, "pool", "list"], check=True, stdout=subprocess.DEVNULL)
        commands = {
            "import click": [sys.executable, "-c", "import click"],
            "import sqlalchemy.orm": [sys.executable, "-c", "import sqlalchemy.orm"],
            "promomail --help": [*promomail, "--help"],
            "promomail redeem": [*promomail, *db, "redeem", "NO-SUCH-CODE"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, command in commands.items():
                times[name].append(_wall(command))

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{'command':<24} {'median ms':>10} {'ratio':>7} {'target':>7}")
    rows = [
        ("import click", None, None),
        ("import sqlalchemy.orm", None, None),
        ("promomail --help", "import click", 3.0),
        ("promomail redeem", "import sqlalchemy.orm", 1.6),
    ]
    for name, reference, target in rows:
        ms = median[name] * 1000
        if reference is None:
            print(f"{name:<24} {ms:>10.0f} {'':>7} {'':>7}")
            continue
        ratio = median[name] / median[reference]
        verdict = "ok" if target is not None and ratio <= target else "MISSED"
        print(f"{name:<24} {ms:>10.0f} {ratio:>6.2f}x {target:>6.1f}x {verdict}")


if __name__ == "__main__":
    main()
