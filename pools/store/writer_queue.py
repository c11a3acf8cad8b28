"""SQLite's one writer slot, queued for inside a process: first come, first served.

SQLite lets one transaction write at a time and tells the others "locked";
they can only try again later (:func:`pools.store.db._begin_immediate`
retries in short steps). Among the threads of one process (``promomail
serve`` answering many checkouts at once) that polling is all waste: a
writer sleeps on after the slot came free, and who gets it next is luck, so
a few unlucky requests wait far longer than the rest. Threads of one
process therefore queue here, in arrival order, and each is handed the slot
by the one before it; only the queue's head ever polls SQLite, for writers
of other processes.
"""

from __future__ import annotations

import threading
from collections import deque


class WriterQueue:
    """A lock handed over in arrival order (``threading.Lock`` wakes any waiter)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._taken = False
        #: One locked lock per waiting thread, released to hand it the slot.
        self._waiting: deque[threading.Lock] = deque()

    @property
    def waiting(self) -> int:
        """How many threads wait for the slot now."""
        with self._mutex:
            return len(self._waiting)

    def acquire(self, timeout: float) -> bool:
        """Wait for the slot, at most ``timeout`` s; whether it came."""
        with self._mutex:
            if not self._taken:
                self._taken = True
                return True
            baton = threading.Lock()
            baton.acquire()
            self._waiting.append(baton)
        if baton.acquire(timeout=timeout):
            return True
        with self._mutex:
            if baton in self._waiting:
                self._waiting.remove(baton)
                return False
        # Handed over between the time-out and the mutex: the slot is ours.
        return True

    def release(self) -> None:
        """Hand the slot to the thread that has waited longest, or free it."""
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().release()  # the slot stays taken, by the next one
            else:
                self._taken = False
