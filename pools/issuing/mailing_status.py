"""A mailing's status, told from its runs: what is true, not what the last run said.

A mailing is rendered by runs of shards: one run of ``all``, or runs of
``K/N`` for each K. The last run to end may have been shard 1 of 2, so its
"finished" says nothing of shard 2; and a cancelled mailing's codes went
back, whatever its runs said. The status, first rule that applies:

* ``cancelled``: ``mailing cancel`` gave its codes back (and no run since);
* ``running``: a run is in progress (or died without recording its end:
  the next run of that shard takes it over);
* ``finished``: every shard of one split (``all``, or each K of some N)
  has a finished run;
* the unfinished run's own status (``stopped``, ``interrupted``,
  ``failed``) when the mailing was rendered as one shard;
* ``partial``: some shards of the split have no finished run.

:attr:`MailingStatus.text` says it for people (``partial: 1 of 2 shards
rendered; shard 2/2 stopped``); the same text is in the JSON documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

#: The shard label of a run that rendered every recipient.
WHOLE = "all"
FINISHED = "finished"
RUNNING = "running"
PARTIAL = "partial"
CANCELLED = "cancelled"

#: Unfinished shards named in the text; beyond that, a count.
_NAMED_SHARDS = 3


@dataclass(frozen=True)
class RunState:
    """One shard's latest run, as the status needs it."""

    shard: str
    status: str


@dataclass(frozen=True)
class MailingStatus:
    #: One word: cancelled, running, finished, stopped, interrupted, failed or partial.
    state: str
    text: str
    #: Shards of the split that have a finished run, and how many it has.
    shards_rendered: int
    shards: int


def _split(shard: str) -> tuple[int, int]:
    """(K, N) of a shard label; ``all`` is shard 1 of 1."""
    if shard == WHOLE:
        return 1, 1
    index, _, count = shard.partition("/")
    return int(index), int(count)


def mailing_status(runs: Sequence[RunState], cancelled_at: datetime | None) -> MailingStatus:
    """The status of a mailing with these shard runs (see the module's rules)."""
    by_split: dict[int, dict[int, str]] = {}
    for run in runs:
        index, count = _split(run.shard)
        by_split.setdefault(count, {})[index] = run.status
    # The split that got furthest (fewest shards on a tie): what the mailing has.
    count, statuses = max(
        by_split.items(),
        key=lambda item: (_finished(item[1].values()) / item[0], -item[0]),
        default=(1, {}),
    )
    done = _finished(statuses.values())
    if cancelled_at is not None:
        return MailingStatus(
            CANCELLED,
            CANCELLED,
            done,
            count,
        )
    running = [run.shard for run in runs if run.status == RUNNING]
    if running:
        text = RUNNING if running == [WHOLE] else f"{RUNNING}: {_shards(running)}"
        return MailingStatus(RUNNING, text, done, count)
    if done == count:
        return MailingStatus(FINISHED, FINISHED, done, count)
    if not statuses:
        return MailingStatus(PARTIAL, f"{PARTIAL}: no run recorded", 0, 1)
    if count == 1:
        status = statuses[1]
        return MailingStatus(status, status, 0, 1)
    unfinished = [
        f"{_shards([f'{k}/{count}'])} {status}"
        for k, status in sorted(statuses.items())
        if status != FINISHED
    ]
    text = f"{PARTIAL}: {done} of {count} shards rendered"
    if unfinished:
        shown = unfinished[:_NAMED_SHARDS]
        more = len(unfinished) - len(shown)
        text += "; " + ", ".join(shown) + (f" and {more} more" if more else "")
    return MailingStatus(PARTIAL, text, done, count)


def _finished(statuses: Iterable[str]) -> int:
    return sum(1 for status in statuses if status == FINISHED)


def _shards(labels: Sequence[str]) -> str:
    noun = "shard" if len(labels) == 1 else "shards"
    shown = ", ".join(labels[:_NAMED_SHARDS])
    more = len(labels) - _NAMED_SHARDS
    return f"{noun} {shown}" + (f" and {more} more" if more > 0 else "")
