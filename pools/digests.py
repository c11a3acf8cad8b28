"""Many like problems told in a few lines: some examples, then a count by kind.

A render of 12,000 recipients whose template reads a column nobody has
fails 12,000 times for one reason; a bounce list of a whole day names
thousands of addresses of other mailings. One line each buries the summary
and whatever else went wrong. A :class:`Digest` keeps a few examples and
counts the rest by kind (the reason without what belongs to one item: its
line, its value), most frequent first; the full list goes to ``--json`` or
a file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

#: Examples shown before the counts.
EXAMPLES = 3
#: A list this long or shorter is shown whole, with no counts.
WHOLE = 5
#: Kinds counted one by one; the rest are counted together.
KINDS = 10

T = TypeVar("T")


@dataclass(frozen=True)
class Digest:
    """A list of problems as a few examples and a count by kind."""

    total: int
    #: Every item described when the list is short (:attr:`whole`), else the first few.
    examples: tuple[str, ...]
    #: (kind, count), most frequent first (first seen first among equals);
    #: empty when the list is shown whole.
    kinds: tuple[tuple[str, int], ...] = ()
    #: Kinds beyond :attr:`kinds`, and how many items they hold together.
    other_kinds: int = 0
    other_items: int = 0

    @property
    def whole(self) -> bool:
        return len(self.examples) == self.total

    def lines(self, noun: str) -> list[str]:
        """The digest as lines for a person: the examples, then the counts.

        ``noun`` names the items in the plural (``recipients failed``).
        """
        if self.whole:
            return list(self.examples)
        lines = list(self.examples)
        more = self.total - len(self.examples)
        lines.append(f"… and {more:,} more: {self.total:,} {noun} in all, by reason:")
        width = len(f"{self.kinds[0][1]:,}") if self.kinds else 1
        lines.extend(f"  {count:>{width},}  {kind}" for kind, count in self.kinds)
        if self.other_kinds:
            lines.append(f"  {self.other_items:>{width},}  for {self.other_kinds:,} other reasons")
        return lines


def digest(
    items: Iterable[T],
    describe: Callable[[T], str],
    kind: Callable[[T], str],
    *,
    examples: int = EXAMPLES,
    whole: int = WHOLE,
    kinds: int = KINDS,
) -> Digest:
    """The digest of ``items``: ``describe`` makes an example's line, ``kind`` its kind."""
    shown: list[str] = []
    counts: Counter[str] = Counter()
    for item in items:
        if len(shown) <= whole:
            shown.append(describe(item))
        counts[kind(item)] += 1
    total = counts.total()
    if total <= whole:
        return Digest(total, tuple(shown))
    # Counter.most_common keeps first-seen order among equal counts.
    ranked = counts.most_common()
    listed = tuple(ranked[:kinds])
    rest = ranked[kinds:]
    return Digest(
        total,
        tuple(shown[:examples]),
        listed,
        other_kinds=len(rest),
        other_items=sum(count for _, count in rest),
    )
