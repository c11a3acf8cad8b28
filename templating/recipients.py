"""Reading recipients (CSV with an ``id`` column, or JSON Lines), streaming.

Shards and worker slices are decided by a stable hash of the recipient id,
so a recipient always lands in the same shard whichever machine reads the
file, and a re-run assigns the same recipients again.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from templating.errors import RecipientError


@dataclass(frozen=True)
class Recipient:
    id: str
    fields: dict[str, Any]
    line: int


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise RecipientError(
                f"shard {self.index}/{self.count} is not valid: use K/N, 1 ≤ K ≤ N"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N`` as typed; strictly, by the one parser every front end uses."""
        from templating.run_options import InvalidSetting, parse_shard

        try:
            return parse_shard(text)
        except InvalidSetting as exc:
            raise RecipientError(f"shard {exc}") from exc

    @property
    def label(self) -> str:
        return "all" if self.count == 1 else f"{self.index}/{self.count}"


def stable_hash(recipient_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(recipient_id.encode(), digest_size=8).digest(), "big")


def in_slice(recipient_id: str, shard: Shard, worker: int = 0, workers: int = 1) -> bool:
    """Whether this recipient belongs to the shard and, within it, to the worker."""
    h = stable_hash(recipient_id)
    return h % shard.count == shard.index - 1 and (h // shard.count) % workers == worker


def columns_of(path: str | Path) -> list[str]:
    """The recipients file's columns (CSV header, or the keys of the first object)."""
    path = Path(path)
    if _is_jsonl(path):
        for recipient in read_recipients(path):
            return list(recipient.fields)
        return []
    with _open(path) as handle:
        return next(csv.reader(handle), [])


def read_recipients(
    path: str | Path, keep: Callable[[str], bool] | None = None
) -> Iterator[Recipient]:
    """Every recipient once (a repeated id is skipped), or RecipientError naming file and line.

    ``keep`` selects a slice (shard, worker) before duplicates are tracked,
    so each process remembers only the ids of its own slice.
    """
    path = Path(path)
    seen: set[str] = set()
    rows = _read_jsonl(path) if _is_jsonl(path) else _read_csv(path)
    for recipient in rows:
        if keep is not None and not keep(recipient.id):
            continue
        if recipient.id in seen:
            continue
        seen.add(recipient.id)
        yield recipient


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson", ".json")


def _open(path: Path) -> Any:
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise RecipientError(f"{path}: cannot read recipients ({exc.strerror})") from exc


def _read_csv(path: Path) -> Iterator[Recipient]:
    with _open(path) as handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader, None)
            if not header:
                raise RecipientError(f"{path}: empty recipients file, no header")
            names = [h.strip() for h in header]
            if "id" not in names:
                raise RecipientError(f"{path}, line 1: the header has no 'id' column")
            id_index = names.index("id")
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(names):
                    raise RecipientError(
                        f"{path}, line {line}: {len(row)} fields where the header has {len(names)}"
                    )
                recipient_id = row[id_index].strip()
                if not recipient_id:
                    raise RecipientError(f"{path}, line {line}: empty id")
                yield Recipient(recipient_id, dict(zip(names, row, strict=True)), line)
        except csv.Error as exc:
            raise RecipientError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise RecipientError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _read_jsonl(path: Path) -> Iterator[Recipient]:
    with _open(path) as handle:
        try:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise RecipientError(f"{path}, line {line}: invalid JSON ({exc.msg})") from exc
                if not isinstance(record, dict):
                    raise RecipientError(f"{path}, line {line}: not a JSON object")
                recipient_id = record.get("id")
                if recipient_id is None or str(recipient_id).strip() == "":
                    raise RecipientError(f"{path}, line {line}: no 'id'")
                yield Recipient(str(recipient_id), record, line)
        except UnicodeDecodeError as exc:
            raise RecipientError(f"{path}: not UTF-8 text ({exc.reason})") from exc
