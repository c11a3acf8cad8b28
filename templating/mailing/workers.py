"""Worker processes: how they start, what each is handed, what each tells the
render (:data:`WorkerMessage`), and the entry point they run."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import queue
import signal
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue

from sqlalchemy import Engine

from promomail.pools import Lease, PromomailError, RunTotals
from promomail.templating.errors import MailingError
from promomail.templating.mailing.pipeline import WorkerJob, render_slice, render_with
from promomail.templating.mailing.planning import RenderPlan
from promomail.templating.mailing.request import RenderRequest
from promomail.templating.mailing.stopping import StopFlag, StopOnSignal, StopWhenOrphaned
from promomail.templating.mailing.store_helper import (
    STORE_PROCESS_FROM,
    HelperEnd,
    HelperTask,
    start_store_helper,
)
from promomail.templating.template.message import MessageTemplate

#: What the forkserver imports once, before any worker forks from it: the
#: whole render, so a worker starts with everything it unpickles and runs.
_PRELOAD = ["__main__", "promomail.templating.mailing.run"]


@dataclass(frozen=True)
class WorkerProgress:
    """So many more of the worker's recipients were rendered and recorded."""

    worker: int
    rendered: int


@dataclass(frozen=True)
class WorkerDone:
    """The worker's last message when it rendered its slice: its totals."""

    worker: int
    totals: RunTotals


@dataclass(frozen=True)
class WorkerFailed:
    """The worker's last message when its render failed: why, in one line."""

    worker: int
    reason: str


#: What a worker process sends the render, through the queue it was handed.
WorkerMessage = WorkerProgress | WorkerDone | WorkerFailed


@dataclass(frozen=True)
class WorkerStart:
    """A worker process's one argument: its job and how it talks to the render."""

    job: WorkerJob
    #: The render's stop event, shared by every worker.
    stop: StopFlag
    messages: Queue[WorkerMessage]
    #: The render's environment (a worker forked from a server started by an
    #: earlier render would have that one's).
    environment: dict[str, str]


def worker_context() -> SpawnContext | ForkServerContext:
    """How worker processes start: forked from a server that imported the render once.

    A spawned worker starts a fresh interpreter and imports the store and
    template machinery again (about half a CPU second each). The forkserver
    is itself such a process, started once per render process with the
    render preloaded; every worker is then a fork of it, ready at once.
    Never a plain fork of the render: it holds threads and open connections.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def start_worker_server(request: RenderRequest) -> None:
    """Start the server workers and store helpers fork from now, so its
    imports overlap the preflight (when the render looks like it needs one)."""
    if _may_fork(request) and "forkserver" in multiprocessing.get_all_start_methods():
        worker_context()
        multiprocessing.forkserver.ensure_running()


#: Bytes of a recipients file that hold :data:`STORE_PROCESS_FROM` short lines.
_HELPER_FILE_BYTES = STORE_PROCESS_FROM * 32


def _may_fork(request: RenderRequest) -> bool:
    if request.workers > 1 or request.store_process:
        return True
    if request.store_process is None:
        with suppress(OSError):
            return os.path.getsize(request.recipients_path) >= _HELPER_FILE_BYTES
    return False


def run_workers(
    job: WorkerJob,
    progress: Callable[[int], None],
    engine: Engine,
    template: MessageTemplate,
    stop_event: StopFlag,
    *,
    helpers: bool = False,
) -> RunTotals:
    """Every worker's totals, added up; with ``helpers``, each worker has a store helper.

    ``job`` is the run's: each worker gets it with its own number and helper.
    """
    request = job.request
    ends: list[HelperEnd | None] = []
    try:
        for worker in range(request.workers):
            ends.append(_start_helper(request, job.plan, job.lease, worker) if helpers else None)
        if request.workers == 1:
            # In this process: the template and plan already made serve as they are.
            with StopOnSignal(stop_event):
                return render_with(
                    replace(job, worker=0, helper=ends[0]), stop_event, progress, engine, template
                )
        context = worker_context()
        messages: Queue[WorkerMessage] = context.Queue()
        environment = dict(os.environ)
        processes = [
            context.Process(
                target=_worker_main,
                args=(
                    WorkerStart(
                        replace(job, worker=worker, helper=ends[worker]),
                        stop_event,
                        messages,
                        environment,
                    ),
                ),
                name=f"promomail-render-{worker}",
            )
            for worker in range(request.workers)
        ]
        with StopOnSignal(stop_event):
            for process, end in zip(processes, ends, strict=True):
                process.start()
                if end is not None:
                    # The worker holds its own copy now: when it ends, its helper ends.
                    end.close()
            return _collect(processes, messages, progress)
    finally:
        for end in ends:
            if end is not None:
                end.close()


def _start_helper(
    request: RenderRequest, plan: RenderPlan, lease: Lease | None, worker: int
) -> HelperEnd:
    task = HelperTask(
        request.db_url,
        plan.pools,
        request.mailing_id,
        request.scope,
        lease,
        request.slice_of(worker),
    )
    return start_store_helper(worker_context(), task)


def _collect(
    processes: Sequence[BaseProcess],
    messages: Queue[WorkerMessage],
    progress: Callable[[int], None],
) -> RunTotals:
    results: dict[int, RunTotals] = {}
    errors: dict[int, str] = {}
    pending = set(range(len(processes)))
    while pending:
        # A worker's last message is in the pipe before it exits, so a worker
        # already dead while the queue then stays empty sent none: it crashed.
        dead = [i for i in pending if not processes[i].is_alive()]
        try:
            message = messages.get(timeout=0.5)
        except queue.Empty:
            for index in dead:
                errors[index] = f"worker {index} died (exit code {processes[index].exitcode})"
                pending.discard(index)
            continue
        match message:
            case WorkerProgress(rendered=rendered):
                progress(rendered)
            case WorkerDone(worker=worker, totals=totals):
                pending.discard(worker)
                results[worker] = totals
            case WorkerFailed(worker=worker, reason=reason):
                pending.discard(worker)
                errors[worker] = reason
    for process in processes:
        process.join()
    if errors:
        raise MailingError("; ".join(errors[k] for k in sorted(errors)))
    totals = RunTotals()
    for worker in sorted(results):
        totals.add(results[worker])
    return totals


def _worker_main(start: WorkerStart) -> None:
    job, stop, messages = start.job, start.stop, start.messages
    worker = job.worker
    # Forked from a server started by an earlier render, a worker would have
    # that render's environment (the eml sender, say): it takes this one's.
    if os.environ != start.environment:
        os.environ.clear()
        os.environ.update(start.environment)
    # Ctrl-C reaches the whole process group: the parent turns it into the stop
    # event, so a worker never dies in the middle of a chunk because of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    try:
        result = render_slice(
            job,
            StopWhenOrphaned(stop, os.getppid()),
            lambda n: messages.put(WorkerProgress(worker, n)),
        )
    except PromomailError as exc:
        messages.put(WorkerFailed(worker, f"worker {worker}: {exc}"))
    except Exception as exc:  # reported to the parent, which fails the render
        messages.put(WorkerFailed(worker, f"worker {worker} (pid {os.getpid()}): {exc!r}"))
    else:
        messages.put(WorkerDone(worker, result))
