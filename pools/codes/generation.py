"""Generating secure random codes straight into a pool.

Randomness comes from the operating system (``secrets``). Bytes are mapped to
the alphabet by rejection sampling, so every character is equally likely; the
mapping is done with ``bytes.translate``, which keeps generation of a million
codes well under a second.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, func, insert, select, update

from promomail.pools.admin.lifecycle import load_pool
from promomail.pools.choices import DEFAULT_ALPHABET, DEFAULT_LENGTH
from promomail.pools.codes.counts import PoolCounts, pool_counts
from promomail.pools.display import counted
from promomail.pools.errors import GenerationError, PoolError
from promomail.pools.store.clock import utcnow
from promomail.pools.store.code_loading import insert_codes
from promomail.pools.store.db import bulk_loading, write_transaction
from promomail.pools.store.models import CODE_MAX_LENGTH, Code, ImportBatch, PoolStatus

_BLOCK = 50_000
_MAX_ROUNDS = 1000


@dataclass(frozen=True)
class CodeSpec:
    length: int = DEFAULT_LENGTH
    alphabet: str = DEFAULT_ALPHABET
    prefix: str = ""
    check_digit: bool = False

    def __post_init__(self) -> None:
        if len(set(self.alphabet)) != len(self.alphabet):
            raise GenerationError("has repeated characters", "alphabet")
        if len(self.alphabet) < 2:
            raise GenerationError("needs at least 2 characters", "alphabet")
        if any(not c.isprintable() or c.isspace() for c in self.alphabet + self.prefix):
            raise GenerationError("take printable characters, no spaces", "alphabet", "prefix")
        if self.length < 1:
            raise GenerationError("must be at least 1", "length")
        if self.code_length > CODE_MAX_LENGTH:
            raise GenerationError(
                f"codes would be {self.code_length} characters long; at most {CODE_MAX_LENGTH}"
            )

    @property
    def code_length(self) -> int:
        return len(self.prefix) + self.length + int(self.check_digit)

    @property
    def space(self) -> int:
        return int(len(self.alphabet) ** self.length)

    def random_bodies(self, count: int) -> list[str]:
        """``count`` random strings of ``length`` characters from the alphabet."""
        n = len(self.alphabet)
        if not self.alphabet.isascii():
            choice = secrets.choice
            return [
                "".join(choice(self.alphabet) for _ in range(self.length)) for _ in range(count)
            ]
        limit = 256 - 256 % n  # bytes at or above it would bias the mapping
        table = bytes(ord(self.alphabet[b % n]) if b < limit else 0 for b in range(256))
        reject = bytes(range(limit, 256))
        needed = count * self.length
        pieces: list[bytes] = []
        have = 0
        while have < needed:
            raw = secrets.token_bytes((needed - have) * 256 // limit + 64)
            piece = raw.translate(table, reject)
            pieces.append(piece)
            have += len(piece)
        chars = b"".join(pieces)[:needed].decode("ascii")
        step = self.length
        return [chars[i : i + step] for i in range(0, needed, step)]

    def finish(self, body: str) -> str:
        return (
            self.prefix + body + (luhn_check_char(body, self.alphabet) if self.check_digit else "")
        )


def luhn_check_char(body: str, alphabet: str) -> str:
    """Luhn mod N check character: catches any single typo and most swaps.

    Luhn's digit-sum step is a permutation of 0..N-1 only for even N; for odd
    N (the default alphabet has 31 characters) doubling modulo N is one, and
    then every swap of two different adjacent characters is caught as well.
    """
    n = len(alphabet)
    total = 0
    factor = 2
    for char in reversed(body):
        addend = factor * alphabet.index(char)
        total += addend % n if n % 2 else addend // n + addend % n
        factor = 3 - factor
    return alphabet[(n - total % n) % n]


def luhn_valid(code_body_with_check: str, alphabet: str) -> bool:
    body, check = code_body_with_check[:-1], code_body_with_check[-1:]
    return bool(body) and luhn_check_char(body, alphabet) == check


@dataclass(frozen=True)
class GenerationReport:
    """What ``codes generate`` added (one batch) and the pool's counts after it."""

    batch: int
    generated: int
    total: int
    available: int


def generate_codes(
    engine: Engine,
    pool_id: str,
    count: int,
    spec: CodeSpec,
    progress: Callable[[int], None] | None = None,
) -> GenerationReport:
    """Add ``count`` new codes to the pool in one transaction, all or none.

    ``progress``, when given, is told how many more codes were made, block by block.
    """
    if count < 1:
        raise GenerationError("must be at least 1", "count")
    with write_transaction(engine) as conn, bulk_loading(conn):
        pool = load_pool(conn, pool_id)
        if pool.status == PoolStatus.ARCHIVED:
            raise PoolError(f"pool {pool_id!r} is archived: no more codes can be added")
        existing = conn.execute(
            select(func.count()).where(
                Code.pool_id == pool_id, func.length(Code.code) == spec.code_length
            )
        ).scalar_one()
        unused = spec.space - existing
        # Counted before the load, while the new codes are not there to read
        # (see imports.upload_codes): a generated code goes in available.
        before = pool_counts(conn, [pool_id]).get(pool_id, PoolCounts())
        if count * 2 > unused:
            raise GenerationError(
                f"{counted(count, 'code')} do not fit comfortably in pool {pool_id!r}: "
                f"{len(spec.alphabet)}^{spec.length} = {spec.space} possible codes, "
                f"{existing} of that length already in the pool; at most {max(unused // 2, 0)} "
                "can be generated (longer codes or a larger alphabet make room)"
            )
        batch_id = conn.execute(
            insert(ImportBatch)
            .values(
                pool_id=pool_id,
                source=f"generated {count} x {spec.code_length} chars",
                format="generated",
                created_at=utcnow(),
            )
            .returning(ImportBatch.id)
        ).scalar_one()
        made = 0
        for _ in range(_MAX_ROUNDS):
            if made >= count:
                break
            want = min(count - made, _BLOCK)
            codes = [spec.finish(body) for body in spec.random_bodies(want)]
            added = insert_codes(conn, pool_id, batch_id, plain=codes)
            made += added
            if progress is not None:
                progress(added)
        if made < count:
            raise GenerationError(f"could not find {count} unused codes for pool {pool_id!r}")
        conn.execute(update(ImportBatch).where(ImportBatch.id == batch_id).values(accepted=made))
        counts = before + PoolCounts(total=made, available=made)
        return GenerationReport(batch_id, made, counts.total, counts.available)
