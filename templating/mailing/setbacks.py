"""What a render could not do as the file asked, told briefly and written out in full.

Recipients that failed, recipients skipped for a pool that ran out, ids
the file holds twice: a few lines each on the terminal (:mod:`pools.digests`),
every one in ``--json`` and in the file ``render --failures FILE`` writes.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promomail.pools import Digest, Failure, InvalidSetting, Skip, digest
from promomail.templating.errors import MailingError
from promomail.templating.mailing.recipients import Duplicate

#: The columns of a failures file written as CSV.
FAILURE_COLUMNS = ("id", "line", "outcome", "reason")


def failed_digest(failed: Sequence[Failure]) -> Digest:
    return digest(
        failed,
        lambda f: f"recipient {f.recipient} (line {f.line}) failed: {f.reason}",
        lambda f: f.kind,
    )


def skipped_digest(skipped: Sequence[Skip]) -> Digest:
    return digest(
        skipped,
        lambda s: f"recipient {s.recipient} (line {s.line}) skipped: {s.reason}",
        lambda s: s.kind,
    )


def duplicates_digest(duplicates: Sequence[Duplicate], recipients: str) -> Digest:
    return digest(
        duplicates,
        lambda d: (
            f"recipient {d.recipient} appears twice in {recipients}, on lines {d.first_line} "
            f"and {d.line}: rendered once, from line {d.first_line}"
        ),
        lambda _d: f"a recipient id that appears again in {recipients} (rendered once)",
    )


def failure_records(failed: Sequence[Failure], skipped: Sequence[Skip]) -> list[dict[str, Any]]:
    """Every recipient not rendered, in the failures file's form."""
    return [
        *({**f.as_dict(), "outcome": "failed"} for f in failed),
        *({**s.as_dict(), "outcome": "skipped"} for s in skipped),
    ]


def failures_target(path: str | Path) -> Path:
    """The file ``--failures`` names, checked before the render starts: a file in
    a folder that exists (InvalidSetting otherwise), so that the list the
    render makes can be written when it ends."""
    target = Path(path)
    if target.is_dir():
        raise InvalidSetting(f"{{failures}} {target} is a folder, not a file", "failures")
    if not target.parent.is_dir():
        raise InvalidSetting(f"{{failures}} {target}: no folder {target.parent}", "failures")
    return target


def write_failures(path: str | Path, failed: Sequence[Failure], skipped: Sequence[Skip]) -> int:
    """Write every recipient not rendered to ``path``; returns how many.

    CSV (``id,line,outcome,reason``) when the name ends in ``.csv``, else
    JSON Lines (``{"recipient", "line", "reason", "outcome"}``). The file
    is replaced whole or not at all: written beside it, then renamed over it.
    """
    target = Path(path)
    records = failure_records(failed, skipped)
    try:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
    except OSError as exc:
        raise MailingError(f"{target}: cannot write the failures ({exc.strerror})") from exc
    try:
        with open(descriptor, "w", encoding="utf-8", newline="") as out:
            if target.suffix.lower() == ".csv":
                writer = csv.writer(out)
                writer.writerow(FAILURE_COLUMNS)
                writer.writerows(
                    (r["recipient"], r["line"], r["outcome"], r["reason"]) for r in records
                )
            else:
                out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise MailingError(f"{target}: cannot write the failures ({exc.strerror})") from exc
    return len(records)
