"""Shards and worker slices of a recipients file, by a stable hash of the id.

A recipient always lands in the same shard whichever machine reads the file,
and a re-run assigns the same recipients again."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from promomail.pools import stable_hash
from promomail.templating.errors import RecipientError


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

    @property
    def label(self) -> str:
        return "all" if self.count == 1 else f"{self.index}/{self.count}"


def worker_hash(recipient_id: str) -> int:
    """Which worker of a run renders a recipient: only the run's own workers
    must agree on it, so a cheaper hash than the shard's (every worker
    hashes every line of the file)."""
    return zlib.crc32(recipient_id.encode())


def in_slice(recipient_id: str, shard: Shard, worker: int = 0, workers: int = 1) -> bool:
    """Whether this recipient belongs to the shard and, within it, to the worker."""
    if shard.count > 1 and stable_hash(recipient_id) % shard.count != shard.index - 1:
        return False
    return workers == 1 or worker_hash(recipient_id) % workers == worker


def slice_filter(shard: Shard, worker: int = 0, workers: int = 1) -> Callable[[str], bool] | None:
    """:func:`in_slice` for one worker as a filter of ids; None when it keeps every id."""
    if shard.count == 1 and workers == 1:
        return None
    if shard.count == 1:
        # worker_hash written out: this runs for every line of the file.
        return lambda recipient_id: zlib.crc32(recipient_id.encode()) % workers == worker
    return lambda recipient_id: in_slice(recipient_id, shard, worker, workers)
