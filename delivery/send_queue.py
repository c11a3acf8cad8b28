"""The messages of a send run waiting for a session, and the pace they leave at."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from promomail.delivery.outgoing import OutgoingMessage


@dataclass
class _Item:
    message: OutgoingMessage
    payload: bytes | None = None
    #: The envelope recipient, worked out once.
    to: str | None = None
    attempts: int = 0
    #: When the retries of a deferred message end (monotonic), set at its first deferral.
    deadline: float | None = None


class _Pace:
    """At most ``rate`` messages a second overall, spaced ``1/rate`` apart: no bursts."""

    def __init__(self, rate: float) -> None:
        self._gap = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._gap
        if slot > now:
            time.sleep(slot - now)


class _Work:
    """The messages waiting for a session: the next batch of the output, and deferred
    ones due later.

    There is no reader thread: the session that finds nothing ready reads the
    next batch itself (outside the lock, the others going on meanwhile). A
    thread building messages ahead would hold the GIL in bursts while the
    sessions, woken by the relay's answers, wait for it.
    """

    def __init__(self, refill: Callable[[], list[_Item] | None]) -> None:
        self.lock = threading.Lock()
        self.items = threading.Condition(self.lock)
        self.ready: deque[_Item] = deque()
        self.later: list[tuple[float, int, _Item]] = []
        self._refill = refill
        self._order = itertools.count()
        self.busy = 0
        self.feeding = True
        self.refilling = False
        self.stop: BaseException | None = None

    def retry_at(self, due: float, item: _Item) -> None:
        with self.lock:
            heapq.heappush(self.later, (due, next(self._order), item))
            # A session asleep until a later due time must look again.
            self.items.notify_all()

    def take(self) -> _Item | None:
        with self.lock:
            while self.stop is None:
                now = time.monotonic()
                if self.later and self.later[0][0] <= now:
                    item = heapq.heappop(self.later)[2]
                elif self.ready:
                    item = self.ready.popleft()
                elif self.feeding and not self.refilling:
                    self._read_more()
                    continue
                elif not self.feeding and not self.busy and not self.later:
                    self.items.notify_all()
                    return None
                else:
                    self.items.wait(self.later[0][0] - now if self.later else None)
                    continue
                self.busy += 1
                return item
            return None

    def _read_more(self) -> None:
        """Read the next batch, the lock released meanwhile (held on entry and exit)."""
        self.refilling = True
        self.lock.release()
        try:
            batch = self._refill()
        except BaseException as exc:
            batch = None
            failure: BaseException | None = exc
        else:
            failure = None
        finally:
            self.lock.acquire()
            self.refilling = False
        if failure is not None and self.stop is None:
            self.stop = failure
        if batch is None:
            self.feeding = False
        else:
            self.ready.extend(batch)
        self.items.notify_all()

    def done(self) -> None:
        with self.lock:
            self.busy -= 1
            if not self.busy and not self.feeding:
                self.items.notify_all()  # the end may have come

    def abort(self, error: BaseException) -> None:
        with self.lock:
            if self.stop is None:
                self.stop = error
            self.items.notify_all()
