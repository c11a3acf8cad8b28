"""The settings of a render as a person types them: parsed strictly, once.

Every front end (the command line, the service) turns text into these
values through the functions here, so a typo or an empty shell variable is
refused with the same message everywhere instead of quietly meaning
something else: ``--shard ""`` must never mean "every recipient", and
``--shard 1/2/3`` or ``--shard ٢/٣`` never some shard of its own choosing.
"""

from __future__ import annotations

import math
import re

from promomail.pools import InvalidSetting
from promomail.templating.choices import MAX_WORKERS
from promomail.templating.mailing.recipients import Shard

#: More shards than machines anyone runs; bounds the hash arithmetic too.
MAX_SHARDS = 10_000
MAX_CHUNK_SIZE = 100_000
MAX_SECONDS = 86_400.0

# ASCII digits only: int() also accepts "+1", " 1", "1_0" and other scripts' digits.
_SHARD = re.compile(r"([1-9][0-9]{0,5})/([1-9][0-9]{0,5})")
_INTEGER = re.compile(r"[0-9]{1,7}")
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,3})?")


def parse_shard(text: str) -> Shard:
    """``K/N``: shard K (1-based) of N, 1 ≤ K ≤ N ≤ 10,000."""
    match = _SHARD.fullmatch(text)
    if match is None:
        raise InvalidSetting(
            f"{text!r} is not a shard: use K/N with whole numbers, 1 ≤ K ≤ N (e.g. 1/4)"
        )
    index, count = int(match[1]), int(match[2])
    if count > MAX_SHARDS:
        raise InvalidSetting(f"{text!r}: at most {MAX_SHARDS:,} shards")
    if index > count:
        raise InvalidSetting(f"{text!r}: shard K of N needs 1 ≤ K ≤ N (shards count from 1)")
    return Shard(index, count)


def _integer(text: str, what: str, low: int, high: int) -> int:
    if _INTEGER.fullmatch(text) is None:
        raise InvalidSetting(f"{text!r} is not a whole number ({what} is {low} to {high:,})")
    return check_range(int(text), what, low, high)


def check_range(value: int, what: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidSetting(f"{what} must be between {low} and {high:,}, not {value:,}")
    return value


def parse_workers(text: str) -> int:
    """How many rendering processes: 1 to 64."""
    return _integer(text, "the number of workers", 1, MAX_WORKERS)


def check_workers(workers: int) -> int:
    return check_range(workers, "the number of workers", 1, MAX_WORKERS)


def parse_chunk_size(text: str) -> int:
    """Recipients rendered per store round trip: 1 to 100,000."""
    return _integer(text, "the chunk size", 1, MAX_CHUNK_SIZE)


def parse_seconds(text: str, what: str, *, allow_zero: bool) -> float:
    """A duration in seconds (at most a day), with up to three decimals."""
    if _SECONDS.fullmatch(text) is None:
        raise InvalidSetting(f"{text!r} is not a number of seconds ({what})")
    return check_seconds(float(text), what, allow_zero=allow_zero)


def check_seconds(value: float, what: str, *, allow_zero: bool) -> float:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and low_ok and value <= MAX_SECONDS):
        bound = "0" if allow_zero else "more than 0"
        raise InvalidSetting(f"{what} must be {bound} and at most {MAX_SECONDS:g} seconds")
    return value
