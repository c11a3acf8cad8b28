"""One worker's render: its recipients chunk by chunk, the store work of one
chunk overlapping the rendering of the next (:class:`ChunkPipeline`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy import Engine

from promomail.pools import Lease, ReservationLost, RunTotals, StoreConfig, check_lease, open_engine
from promomail.templating.mailing.chunks import Abandoned, ChunkRenderer, Prepared, RenderedChunk
from promomail.templating.mailing.heap import long_lived_frozen
from promomail.templating.mailing.outputs import MessageWriter
from promomail.templating.mailing.planning import RenderPlan
from promomail.templating.mailing.recipients import Recipient
from promomail.templating.mailing.request import RenderRequest
from promomail.templating.mailing.sources import ChunkCodes
from promomail.templating.mailing.stopping import StopFlag, StopWhenOrphaned
from promomail.templating.mailing.store_helper import HelperEnd, StoreClient, settle_request
from promomail.templating.template.message import MessageTemplate


@dataclass(frozen=True)
class WorkerJob:
    """What one worker renders, and for which run: picklable, so a worker
    process is handed it whole."""

    request: RenderRequest
    plan: RenderPlan
    #: Which slice of the recipients (see :meth:`RenderRequest.slice_of`).
    worker: int
    #: Names the output parts of this run, finished or discarded together.
    run_id: str
    lease: Lease | None = None
    #: The pipe to this worker's store helper process, when it has one.
    helper: HelperEnd | None = None


class ChunkPipeline:
    """Overlaps a worker's store work with its rendering.

    While chunk k renders in the calling thread, the store side settles
    chunk k-1 and prepares chunk k+1: a store helper process when the worker
    has one (:mod:`templating.mailing.store_helper`), else one database
    thread (the sqlite3 and psycopg drivers release the GIL while the
    database works, but the thread's Python still shares it with the
    render). A chunk's messages are written only once its settle has
    committed, so output never shows a code the store does not record.

    A stop asked for (Ctrl-C, SIGTERM, a lost lease) ends the worker after the
    chunk in hand, which is settled and written. A run that is gone (its
    render process killed, see :class:`StopWhenOrphaned`) is different: its
    output is discarded anyway and its next run may already be rendering the
    same recipients, so from the moment ``abandoned`` says so no settle starts
    and no chunk is prepared; what the unsettled chunks held goes back to the
    pool (and whatever a failed release leaves reserved, the next run of the
    mailing frees when it takes the lease).
    """

    def __init__(
        self,
        renderer: ChunkRenderer,
        writer: MessageWriter,
        result: RunTotals,
        progress: Callable[[int], None],
        fence: Callable[[], None] = lambda: None,
        abandoned: Callable[[], bool] = lambda: False,
        helper: StoreClient | None = None,
    ) -> None:
        self.renderer = renderer
        self.writer = writer
        self.result = result
        self.progress = progress
        #: Raises LeaseLost once this run's lease is in other hands.
        self.fence = fence
        #: Whether the run this worker renders for is gone (checked before
        #: every prepare, render and settle, not only between chunks).
        self.abandoned = abandoned
        #: Set once the run was found gone: every later chunk is given up too
        #: (settles run in order, so no chunk after an unwritten one is written).
        self.gave_up = False
        #: The worker's store helper process; without one, a thread does the store work.
        self.helper = helper
        self.db = ThreadPoolExecutor(1, thread_name_prefix="promomail-db")
        self.settling: deque[tuple[Future[None], Prepared, RenderedChunk]] = deque()
        renderer.before_refill = self.wait_settled

    def _giving_up(self) -> bool:
        if not self.gave_up and self.abandoned():
            self.gave_up = True
            self.result.interrupted = True
            if self.helper is not None:
                # Settles already sent to the helper must not start either.
                self.helper.abandon()
        return self.gave_up

    def run(self, chunks: Iterator[list[Recipient]], stop: StopFlag) -> None:
        upcoming = self._prepare_next(chunks)
        # Prepared (its codes held) but not yet handed to the db thread to settle.
        holding: Prepared | None = None
        try:
            while upcoming is not None:
                if stop.is_set():
                    self.result.interrupted = True
                    break
                holding = upcoming.result()
                upcoming = None
                if holding is None or self._giving_up():
                    break
                upcoming = self._prepare_next(chunks)
                outcome, source = self.renderer.render(holding)
                # Rendering may take long: a run gone meanwhile settles nothing more.
                if self._giving_up():
                    break
                prepared, holding = holding, None
                settled = self._submit_settle(prepared, source)
                self.settling.append((settled, prepared, outcome))
                self._take_settled(block=False)
                if outcome.totals.stopped_at_pool:
                    self.result.stopped_at_pool = outcome.totals.stopped_at_pool
                    break
            self.wait_settled()
        finally:
            # Codes held for a chunk that will not be settled go back now.
            if holding is not None:
                with suppress(Exception):
                    self.renderer.release(holding)
            if upcoming is not None:
                with suppress(Exception):
                    left = upcoming.result()
                    if left is not None:
                        self.renderer.release(left)
            for settled, _, _ in self.settling:
                with suppress(Exception):
                    settled.result()
            self.db.shutdown(wait=True)

    def _submit_settle(self, prepared: Prepared, source: ChunkCodes) -> Future[None]:
        if self.helper is None:
            return self.db.submit(self._settle, prepared, source)
        if self._giving_up():
            # Asked here, not in the helper: a settle never starts after this.
            gone: Future[None] = Future()
            self.renderer.release(prepared)
            gone.set_exception(Abandoned())
            return gone
        return self.helper.submit(
            settle_request(
                prepared,
                source.handed,
                source.reissues,
                source.message_refs,
                source.recorded_refs,
            )
        )

    def _settle(self, prepared: Prepared, source: ChunkCodes) -> None:
        """Settle the chunk only while the run is not gone (the store checks the lease)."""
        if self._giving_up():
            self.renderer.release(prepared)
            raise Abandoned
        self.renderer.settle(prepared, source)

    def _prepare_next(self, chunks: Iterator[list[Recipient]]) -> Future[Prepared | None] | None:
        """The next chunk, prepared; None once there is none (or, from a helper, a future of None)."""
        if self._giving_up():
            return None
        if self.helper is not None:
            return self.helper.next_chunk()
        chunk = next(chunks, None)
        if not chunk:
            return None
        prepared: Future[Prepared | None] = self.db.submit(self.renderer.prepare, chunk)
        return prepared

    def wait_settled(self) -> None:
        self._take_settled(block=True)

    def _take_settled(self, *, block: bool) -> None:
        while self.settling and (block or self.settling[0][0].done()):
            settled, prepared, outcome = self.settling.popleft()
            try:
                settled.result()
            except Abandoned:
                continue
            except ReservationLost:
                # Its codes were voided or reclaimed meanwhile; settle already
                # released what was left. Render the chunk again, in order —
                # unless a run that took the lease over reclaimed them, or the
                # run is gone.
                if self._giving_up():
                    continue
                self.fence()
                outcome = self.renderer.render_now(prepared.chunk)
            self._record(prepared.chunk, outcome)

    def _record(self, chunk: list[Recipient], outcome: RenderedChunk) -> None:
        self.writer.write(outcome.messages)
        self.result.add(outcome.totals)
        self.progress(len(chunk))


def render_slice(job: WorkerJob, stop: StopFlag, progress: Callable[[int], None]) -> RunTotals:
    """A worker process's render: its own engine, the template and plan it was handed."""
    engine = open_engine(StoreConfig(job.request.db_url))
    try:
        template = MessageTemplate.from_compiled(job.plan.template)
        return render_with(job, stop, progress, engine, template)
    finally:
        engine.dispose()


def render_with(
    job: WorkerJob,
    stop: StopFlag,
    progress: Callable[[int], None],
    engine: Engine,
    template: MessageTemplate,
) -> RunTotals:
    """Render this worker's recipients chunk by chunk; stops between chunks when asked.

    With a store helper (``job.helper``, the pipe to its process) the chunks'
    store work runs there; otherwise in a thread of this process.
    """
    request, lease = job.request, job.lease
    writer = request.output.open_writer(job.worker, job.run_id)
    renderer = ChunkRenderer(
        engine,
        template,
        job.plan.pools,
        request.mailing_id,
        request.scope,
        request.on_exhausted,
        request.variables,
        encode=writer.encode,
        recipients_path=request.recipients_path,
        lease=lease,
    )
    result = RunTotals()

    def fence() -> None:
        if lease is not None:
            check_lease(engine, lease)

    abandoned = stop.orphaned if isinstance(stop, StopWhenOrphaned) else (lambda: False)
    client = StoreClient(job.helper) if job.helper is not None else None
    # With a helper, the helper reads the recipients and sends them with their codes.
    chunks = request.slice_of(job.worker).chunks() if client is None else iter(())
    try:
        with long_lived_frozen():
            ChunkPipeline(renderer, writer, result, progress, fence, abandoned, client).run(
                chunks, stop
            )
    finally:
        writer.close()
        if client is not None:
            client.close()
    return result
