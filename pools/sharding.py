"""Which shard a recipient belongs to: one hash for the render and the send.

``render --shard K/N`` and ``send --shard K/N`` must pick the same
recipients, on every machine and in every release, so N batch tasks can
each send what they rendered. Both read the hash from here.
"""

from __future__ import annotations

import hashlib


def stable_hash(recipient_id: str) -> int:
    """The shard hash: the same on every machine and in every release."""
    return int.from_bytes(hashlib.blake2b(recipient_id.encode(), digest_size=8).digest(), "big")


def in_shard(recipient_id: str, index: int, count: int) -> bool:
    """Whether the recipient is in shard ``index`` (1-based) of ``count``."""
    return count == 1 or stable_hash(recipient_id) % count == index - 1
