"""Template work for a server, in a few processes of its own.

A server (``promomail serve``) checks and previews templates for whoever
opens its page, in threads that also answer the checkout. Run there, a
template would escape two bounds: SIGALRM, which stops a render after
``LIMITS.render_seconds``, reaches only a
process's main thread; and a thread busy with a slow template is a thread
taken from the checkout. :class:`TemplateProcesses` runs that work instead
in a small, fixed number of worker processes:

- each job runs in a worker's main thread, so the render's timer (and the
  compile's) works as on the command line;
- a job that has not answered after :data:`JOB_SECONDS` (a single step in C
  that the timer cannot interrupt, a store that does not answer) has its
  process killed; the next job starts a fresh one;
- the workers run at a lower CPU priority than the server, so previews use
  the CPU the checkout leaves;
- at most :attr:`TemplateProcesses.size` jobs run at once, whoever asks:
  the server's other threads never wait for a template.

A job is a module-level function ``job(engine, *args)``; each worker opens
its own engine on the store and imports the modules named in ``preload``
before it takes its first job, so a job's time is the job's alone.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from sqlalchemy import Engine

from promomail.pools import PromomailError, StoreConfig, open_engine
from promomail.templating.template import render_limits

log = logging.getLogger("promomail.templates")

#: Worker processes a server gives to template work.
PROCESSES = 2
#: Seconds a job may take before its process is killed: a check (one compile)
#: and a preview (another compile and one render), each stopped by its own
#: timer well before this, plus the store's part. Less than the 10 s a server
#: gives requests in flight when it stops.
JOB_SECONDS = render_limits.LIMITS.render_seconds + 3.0
#: How much lower the workers' CPU priority is than the server's.
NICENESS = 5
#: Seconds a worker is given to leave on its own when the pool closes.
CLOSE_SECONDS = 1.0
#: Seconds a new worker may take to start (a fresh interpreter, its imports).
START_SECONDS = 60.0

T = TypeVar("T")

assert render_limits.LIMITS.compile_seconds < JOB_SECONDS


class TemplateJobFailed(PromomailError):
    """A template job was stopped (it ran too long) or its process died."""


class TemplateProcesses:
    """At most ``size`` worker processes for template jobs; see the module docstring.

    Thread-safe. :meth:`run` blocks the calling thread until the job is done
    (at most ``job_seconds``, plus the start of a worker the first time);
    a caller that must not block (an event loop) limits itself to ``size``
    concurrent calls and hands each to a thread.
    """

    def __init__(
        self,
        db_url: str,
        size: int = PROCESSES,
        *,
        job_seconds: float = JOB_SECONDS,
        preload: Sequence[str] = (),
    ) -> None:
        self.db_url = db_url
        self.preload = tuple(preload)
        self.size = size
        self.job_seconds = job_seconds
        self._context = multiprocessing.get_context("spawn")
        # A slot is an idle worker, or None: a worker to start when needed.
        # Last in, first out: a worker already started is used before another starts.
        self._slots: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(size):
            self._slots.put(None)
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._closed = False

    def run(self, job: Callable[..., T], *args: Any) -> T:
        """``job(engine, *args)`` in a worker process: its result, or what it raised.

        What the job raises comes back as raised when it can be sent between
        processes (library errors can); anything else as a
        :class:`TemplateJobFailed`, logged with its traceback.
        """
        worker = self._slots.get()
        try:
            if self._closed:
                raise TemplateJobFailed("the server is stopping")
            if worker is not None and not worker.process.is_alive():
                # Ended while idle (killed from outside, say): replaced, unseen.
                self._retire(worker)
                worker = None
            if worker is None:
                worker = self._start()
            answer = worker.call(job, args, self.job_seconds)
        except BaseException:
            if worker is not None:
                self._retire(worker)
            self._slots.put(None)
            raise
        self._slots.put(worker)
        return self._result(answer)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop every worker: asked to leave, killed if it does not.

        A job in progress ends with a :class:`TemplateJobFailed` in the
        thread that waits for it (which closes that worker's pipe itself).
        """
        self._closed = True
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.ask_to_leave()
        deadline = time.monotonic() + CLOSE_SECONDS
        for worker in workers:
            worker.process.join(max(deadline - time.monotonic(), 0))
            worker.kill()

    def _start(self) -> _Worker:
        worker = _Worker(self._context, self.db_url, self.preload)
        with self._lock:
            self._workers.add(worker)
        if self._closed:  # close() ran while it started
            self._retire(worker)
            raise TemplateJobFailed("the server is stopping")
        return worker

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        worker.conn.close()
        with self._lock:
            self._workers.discard(worker)

    @staticmethod
    def _result(answer: tuple[str, Any]) -> Any:
        kind, value = answer
        if kind == "ok":
            return value
        if kind == "raise":
            raise value
        log.error("a template job failed:\n%s", value)
        raise TemplateJobFailed("the template could not be looked at (the server log says why)")


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, context: Any, db_url: str, preload: tuple[str, ...]) -> None:
        self.conn, child_end = context.Pipe()
        self.process = context.Process(
            target=_serve,
            args=(child_end, db_url, preload),
            name="promomail-templates",
            daemon=True,
        )
        self.process.start()
        child_end.close()
        self.ready = False

    def call(self, job: Callable[..., Any], args: tuple[Any, ...], seconds: float) -> Any:
        if not self.ready:
            if not self.conn.poll(START_SECONDS):
                raise TemplateJobFailed(f"a template process did not start in {START_SECONDS:g} s")
            self._receive()  # its "ready"
            self.ready = True
        self.conn.send((job, args))
        if not self.conn.poll(seconds):
            # Alive but late: a step the render's timer cannot interrupt.
            raise TemplateJobFailed(
                f"the template took longer than {seconds:g} s to check and render; it was stopped"
            )
        return self._receive()

    def _receive(self) -> Any:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise TemplateJobFailed(
                "the process rendering the template ended (out of memory?)"
            ) from None

    def ask_to_leave(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


def _serve(conn: Connection, db_url: str, preload: tuple[str, ...]) -> None:
    """A worker's life: jobs from ``conn`` until it closes or sends None."""
    # The server stops its workers itself; Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    for module in preload:
        importlib.import_module(module)
    engine: Engine | None = None
    with contextlib.suppress(Exception):  # if it fails, the first job says why
        engine = _open(db_url)
    try:
        try:
            conn.send("ready")
        except OSError:
            return  # the server is gone
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the server is gone
            if message is None:
                return
            job, args = message
            try:
                if engine is None:
                    engine = _open(db_url)
                answer: tuple[str, Any] = ("ok", job(engine, *args))
            except Exception as exc:
                answer = _failure(exc)
            try:
                conn.send(answer)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                conn.send(_failure(exc))
    finally:
        if engine is not None:
            engine.dispose()


def _open(db_url: str) -> Engine:
    # One job at a time: a connection or two is all a worker needs.
    options = {"pool_size": 2, "max_overflow": 0}
    return open_engine(StoreConfig(db_url, engine_options=options), migrate=False)


def _failure(exc: BaseException) -> tuple[str, Any]:
    """What a job raised, as the parent can read it back."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        if isinstance(exc, PromomailError):
            return ("raise", PromomailError(str(exc)))
        return ("crash", "".join(traceback.format_exception(exc)))
    if isinstance(exc, PromomailError):
        return ("raise", exc)
    return ("crash", "".join(traceback.format_exception(exc)))
