"""How a render is asked to stop, and how a worker sees that its render is gone.

A stop asked for (Ctrl-C, SIGTERM, a lost lease) sets a :class:`StopFlag`
shared by the render and its workers: each ends after the chunk in hand.
A render killed outright sets nothing; its workers find out through
:class:`StopWhenOrphaned`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from types import FrameType
from typing import Any, Protocol


class StopFlag(Protocol):
    """Set once to ask a render to stop: a :class:`threading.Event` for a render
    in one process, a multiprocessing event shared with its workers otherwise."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


class StopOnSignal:
    """SIGINT/SIGTERM ask the render to stop after the chunk in hand."""

    def __init__(self, event: StopFlag) -> None:
        self.event = event
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.event.set()

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class StopWhenOrphaned:
    """A worker's stop event that also counts as set once its render is gone.

    ``kill -9`` of the render runs no handler, so nobody sets the event: without
    this a killed render's workers would go on issuing codes, and race the
    next run of the mailing for the same recipients.
    """

    def __init__(self, event: StopFlag, parent: int) -> None:
        self.event = event
        #: This worker's parent process when it started: the render, or the
        #: server it was forked from (which ends when the render ends).
        self.parent = parent
        self.render = multiprocessing.parent_process()

    def orphaned(self) -> bool:
        """Whether the render that started this worker has died.

        The render holds the write end of a pipe the worker reads from
        (multiprocessing's parent sentinel), so its death is seen at once,
        whichever way the worker was started; and a worker whose parent
        changed (the kernel handed it to another) is an orphan too. From
        then on the worker settles nothing more.
        """
        if os.getppid() != self.parent:
            return True
        return self.render is not None and not self.render.is_alive()

    def is_set(self) -> bool:
        return bool(self.event.is_set()) or self.orphaned()

    def set(self) -> None:
        self.event.set()
