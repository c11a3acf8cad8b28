"""The progress bar of long work (render, upload, generate, send), on stderr.

Drawn with rich's progress display, only when stderr is a terminal: there it
shows the total, the rate and the time left, is redrawn in place at most ten
times a second and is erased when the work ends, leaving the command's
one-line summary. When stderr is a file or a pipe nothing is drawn (and rich
is not even imported): a log gets the summary alone.

Why rich: its rate and time left come from the recent advances only, so a
bar that starts part-way (a ``send`` run after an earlier one) estimates
from this run's pace; click's own bar divides the time elapsed by the whole
count done, which a head start makes wrong. Its live display also keeps
lines written to stderr meanwhile above the bar instead of through it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from promomail.commands.output import round_rate

if TYPE_CHECKING:
    from rich.progress import Progress, Task, TaskID
    from rich.text import Text

#: The unit of a bar that counts bytes (a file being read): sizes and MB/s.
BYTES = "bytes"


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


class ProgressBar:
    """What a command tells its bar; this one, for a stderr that is no terminal, shows nothing."""

    #: Whether anything is drawn: work done only for the bar can be left out when not.
    shown = False

    def advance(self, amount: int) -> None:
        """``amount`` more units done."""

    def counted(self, total: int, *, done: int = 0, note: str = "") -> None:
        """The total became known (after a preflight): ``done`` of it was done
        before this run started; ``note`` says more about it beside the bar."""


class _Drawn(ProgressBar):
    shown = True

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: int) -> None:
        self._progress.advance(self._task, amount)

    def counted(self, total: int, *, done: int = 0, note: str = "") -> None:
        # The rate counts only what is advanced from here: a head start is no pace.
        self._progress.reset(self._task, total=total, completed=done, note=note)


@contextmanager
def progress_bar(
    label: str, unit: str, total: int | None = None, *, note: str = ""
) -> Iterator[ProgressBar]:
    """A bar labelled ``label`` counting ``unit`` (or :data:`BYTES`) up to ``total``
    (None: not known yet, see :meth:`ProgressBar.counted`), while the block runs;
    ``note`` beside it until :meth:`ProgressBar.counted` replaces it."""
    if not stderr_is_terminal():
        yield ProgressBar()
        return
    progress = _rich_progress(unit)
    with progress:
        task = progress.add_task(label, total=total, note=note)
        # Drawn at once, so the first frame shows where the work starts.
        progress.refresh()
        yield _Drawn(progress, task)


def _rich_progress(unit: str) -> Progress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text

    class Count(ProgressColumn):
        """``12,000/64,000 recipients``."""

        def render(self, task: Task) -> Text:
            done = f"{int(task.completed):,}"
            if task.total is not None:
                done += f"/{int(task.total):,}"
            return Text(f"{done} {unit}")

    class Rate(ProgressColumn):
        """``9,840/s`` over the last advances; ``…/s`` until there are two."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("…/s" if speed is None else f"{round_rate(speed):,}/s")

    class TimeLeft(TimeRemainingColumn):
        def render(self, task: Task) -> Text:
            left = super().render(task)
            return Text(f"ETA {left.plain}") if left.plain else left

    if unit == BYTES:
        amount: list[ProgressColumn] = [DownloadColumn(), TransferSpeedColumn()]
    else:
        amount = [Count(), Rate()]
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        TaskProgressColumn(),
        *amount,
        TimeLeft(),
        TextColumn("{task.fields[note]}"),
        console=Console(stderr=True, highlight=False),
        transient=True,
        # stdout may be a pipe holding a --json document: never written through the bar.
        redirect_stdout=False,
        refresh_per_second=10,
    )
