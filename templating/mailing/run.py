"""Rendering a whole mailing: preflight, worker processes, output, summary.

Safe to re-run with the same mailing id at any point (after a crash, a kill,
an interrupt, a pool running out): recipients who already have codes in the
mailing get the same codes, the others get new ones, and the output again
holds every recipient. One run per mailing and shard renders at a time: a
run first takes the shard's lease (:mod:`pools.issuing.leases`), which refuses a
second run naming the first, and frees the reservations a killed run of the
same mailing and shard left behind. The lease is renewed while the run
renders; a run that finds it taken over stops without settling anything more.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import queue
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any

from sqlalchemy import Engine

from pools.admin.lifecycle import PoolView, load_pool, not_issuing
from pools.admin.lookup import told_where
from pools.after_sending.references import delivery_ref_key
from pools.codes.counts import available_count
from pools.codes.notifications import LowStockAlert, check_low_stock
from pools.errors import InvalidSetting, LeaseLost, PoolExhausted, PromomailError, ReservationLost
from pools.identifiers import id_problem, value_problem
from pools.issuing.claiming import reclaim_expired, shared_code
from pools.issuing.holdings import has_returns, untouched_pools
from pools.issuing.leases import (
    DEFAULT_LEASE_SECONDS,
    Lease,
    LeaseKeeper,
    acquire_lease,
    check_lease,
    release_lease,
)
from pools.issuing.mailings import (
    Failure,
    RunTotals,
    Skip,
    finish_run,
    issued_customers_in,
    served_customers_in,
    start_run,
)
from pools.store.clock import utcnow
from pools.store.db import StoreConfig, open_engine, read_transaction
from pools.store.models import PoolStatus
from templating.errors import InvalidTemplate, MailingError
from templating.mailing.chunks import Abandoned, ChunkRenderer, PoolPlan, Prepared, RenderedChunk
from templating.mailing.columns import check_columns
from templating.mailing.heap import long_lived_frozen
from templating.mailing.options import (
    CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    check_range,
    check_seconds,
    check_workers,
)
from templating.mailing.outputs import MessageWriter, OutputTarget
from templating.mailing.recipients import (
    Duplicate,
    Recipient,
    RecipientSlice,
    Shard,
    duplicates_in,
    read_recipients,
    slice_filter,
)
from templating.mailing.sources import ChunkCodes, OnExhausted
from templating.mailing.store_helper import (
    STORE_PROCESS_FROM,
    HelperEnd,
    HelperTask,
    StoreClient,
    settle_arguments,
    start_store_helper,
)
from templating.template.message import CompiledTemplate, MessageTemplate

#: Recipient ids looked up per query when the preflight counts who is served.
PREFLIGHT_BATCH = 5_000


@dataclass(frozen=True)
class RenderRequest:
    template_path: str
    recipients_path: str
    mailing_id: str
    db_url: str
    output: OutputTarget
    on_exhausted: OnExhausted = OnExhausted.STOP
    workers: int = 1
    shard: Shard = field(default_factory=Shard)
    variables: dict[str, str] = field(default_factory=dict)
    chunk_size: int = CHUNK_SIZE
    #: How long the shard's lease lasts without renewal (a killed run blocks
    #: the next one at most this long).
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    #: How long to wait for a run of the same mailing and shard to end
    #: before refusing; 0 refuses at once.
    wait_seconds: float = 0.0
    #: Whether each worker's store work runs in a helper process of its own
    #: (:mod:`templating.mailing.store_helper`); None decides by the mailing's size.
    store_process: bool | None = None

    def __post_init__(self) -> None:
        if not self.mailing_id.strip():
            raise InvalidSetting("{mailing_id} must not be empty", "mailing_id")
        # The id goes into every message's headers: refused here, not by the
        # first message that cannot be written.
        problem = id_problem(self.mailing_id)
        if problem is not None:
            raise InvalidSetting(f"{{mailing_id}} {self.mailing_id!r}: {problem}", "mailing_id")
        check_workers(self.workers)
        check_range(self.chunk_size, "the chunk size", 1, MAX_CHUNK_SIZE)
        check_seconds(self.lease_seconds, "the lease", allow_zero=False)
        check_seconds(self.wait_seconds, "the wait for another run", allow_zero=True)
        if "client" in self.variables:
            raise InvalidSetting(
                "{variables} cannot name 'client': it would hide the recipient", "variables"
            )
        for name, value in self.variables.items():
            # In every message: refused once here rather than by each recipient.
            problem = value_problem(value)
            if problem is not None:
                raise InvalidSetting(f"{{variables}} {name}: the value {problem}", "variables")

    def slice_of(self, worker: int) -> RecipientSlice:
        """The recipients worker ``worker`` renders (the preflight checked the file)."""
        return RecipientSlice(
            self.recipients_path, self.shard, worker, self.workers, self.chunk_size
        )

    @property
    def scope(self) -> str:
        """Reservations of this mailing and shard, reclaimed by its next run."""
        return f"{self.mailing_id}|{self.shard.label}"


@dataclass
class RenderSummary:
    """A finished render: its totals, and what the front ends report with them."""

    mailing: str
    shard: str
    totals: RunTotals
    seconds: float
    output: str
    low_stock: list[LowStockAlert] = field(default_factory=list)
    #: The earlier run whose expired lease this run took over, described.
    took_over: str | None = None
    #: Ids the recipients file (this shard of it) holds more than once.
    duplicates: list[Duplicate] = field(default_factory=list)
    recipients_file: str = ""

    @property
    def recipients(self) -> int:
        return self.totals.recipients

    @property
    def rendered(self) -> int:
        return self.totals.rendered

    @property
    def new_codes(self) -> int:
        return self.totals.new_codes

    @property
    def reused_codes(self) -> int:
        return self.totals.reused_codes

    @property
    def failed(self) -> list[Failure]:
        return self.totals.failures

    @property
    def skipped(self) -> list[Skip]:
        return self.totals.skips

    @property
    def stopped_at_pool(self) -> str | None:
        return self.totals.stopped_at_pool

    @property
    def interrupted(self) -> bool:
        return self.totals.interrupted

    @property
    def rate(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0

    @property
    def status(self) -> str:
        return self.totals.status

    @property
    def ok(self) -> bool:
        return self.status == "finished" and not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "mailing": self.mailing,
            "shard": self.shard,
            "status": self.status,
            "output": self.output,
            "recipients": self.recipients,
            "rendered": self.rendered,
            "new_codes": self.new_codes,
            "reused_codes": self.reused_codes,
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "seconds": round(self.seconds, 3),
            "recipients_per_second": round(self.rate, 1),
            "stopped_at_pool": self.stopped_at_pool,
            "failures": [failure.as_dict() for failure in self.failed],
            "skipped_recipients": [skip.as_dict() for skip in self.skipped],
            "duplicates": [duplicate.as_dict() for duplicate in self.duplicates],
            "low_stock": [alert.as_dict() for alert in self.low_stock],
        }


def plan_pools(engine: Engine, template: MessageTemplate) -> PoolPlan:
    """Resolve the template's pool references; issuing pools must be active.

    The one place a run loads its pools: the plan goes to every worker.
    """
    usage = template.usage
    if usage.non_literal:
        first = usage.non_literal[0]
        raise InvalidTemplate(
            f"client.{first.function}() needs the pool as a string literal, e.g. "
            f"client.{first.function}('spring')",
            template=template.name,
            line=first.line,
        )
    refs: dict[str, str] = {}
    per_customer: dict[str, int] = {}
    pools: dict[str, PoolView] = {}
    with read_transaction(engine) as conn:
        for ref in usage.pool_refs:
            line = usage.issues_from.get(ref) or usage.reissues_from.get(ref)
            try:
                pool = load_pool(conn, ref, allow_name=True)
            except PromomailError as exc:
                raise InvalidTemplate(
                    told_where(exc, engine), template=template.name, line=line
                ) from exc
            if ref in usage.issues_from and pool.status != PoolStatus.ACTIVE:
                raise InvalidTemplate(
                    not_issuing(pool.id, pool.status), template=template.name, line=line
                )
            refs[ref] = pool.id
            pools[pool.id] = pool
            if pool.settings.per_customer is not None:
                per_customer[pool.id] = pool.settings.per_customer
    issuing = tuple(dict.fromkeys(refs[r] for r in usage.issues_from))
    reissuing = tuple(dict.fromkeys(refs[r] for r in usage.reissues_from))
    return PoolPlan(refs, issuing, reissuing, per_customer, pools)


@dataclass(frozen=True)
class RenderPlan:
    """What the render process worked out once and hands to each worker:
    the compiled template and the resolved pools."""

    template: CompiledTemplate
    pools: PoolPlan


def plan_render(engine: Engine, request: RenderRequest) -> tuple[MessageTemplate, RenderPlan]:
    """Read, compile and analyse the template and resolve its pools, once per run.

    Refuses (:class:`MissingColumns`) a template that reads, with no fallback,
    a column the recipients file does not have: it would fail every recipient.
    """
    template = MessageTemplate.from_file(request.template_path)
    pools = plan_pools(engine, template)
    refusal = check_columns(template.name, template.usage, request.recipients_path).refusal()
    if refusal is not None:
        raise refusal
    return template, RenderPlan(template.compiled, pools)


@dataclass(frozen=True)
class RenderCount:
    """What the preflight found, told before the first recipient renders."""

    #: Recipients this run renders (the shard's, when it renders one), each id once.
    recipients: int
    #: Of them, those earlier runs of the mailing already gave codes: a
    #: re-run renders their messages again with the same codes.
    served_before: int = 0


@dataclass(frozen=True)
class Preflight(RenderCount):
    """What the preflight's read of the whole recipients file found."""

    #: Ids of this shard the file holds more than once (each rendered once).
    duplicates: list[Duplicate] = field(default_factory=list)


def preflight(
    engine: Engine, request: RenderRequest, plan: PoolPlan, *, count_served: bool = False
) -> Preflight:
    """Read the whole recipients file once, before any code moves.

    Any bad line fails here. With ``--on-exhausted stop`` a mailing its
    pools cannot cover is refused, naming pool, needed and available. With
    ``count_served``, the recipients earlier runs gave codes are counted too.
    """
    keep = slice_filter(request.shard)
    check = request.on_exhausted is OnExhausted.STOP
    repeats: list[tuple[str, int]] = []
    recipients = 0
    served_before = 0
    with read_transaction(engine) as conn:
        # Served means "in this recipients file and already given a code", not
        # "given a code by this mailing": a re-run with other recipients than
        # before must not count the earlier ones as covered.
        served = dict.fromkeys(plan.issuing, 0)
        # Only a re-run has served anyone: a first run looks up no batch.
        touched = [p for p in plan.issuing if p not in plan.untouched]
        earlier = touched if check else []
        read = read_recipients(
            request.recipients_path,
            keep,
            with_fields=False,
            repeated=lambda rid, line: repeats.append((rid, line)),
        )
        ids = (r.id for r in read)
        while batch := list(islice(ids, PREFLIGHT_BATCH)):
            recipients += len(batch)
            for pool_id in earlier:
                served[pool_id] += issued_customers_in(conn, request.mailing_id, pool_id, batch)
            if count_served:
                served_before += served_customers_in(conn, request.mailing_id, touched, batch)
        for pool_id in plan.issuing if check else ():
            pool = plan.pools[pool_id]
            missing = recipients - served[pool_id]
            if pool.settings.multi_use:
                if missing and shared_code(conn, pool, utcnow()) is None:
                    raise PoolExhausted(pool_id, missing, 0, shared=True)
                continue
            needed = missing * plan.per_customer.get(pool_id, 1)
            available = available_count(conn, pool_id)
            if needed > available:
                raise PoolExhausted(pool_id, needed, available)
    return Preflight(
        recipients, served_before, duplicates_in(request.recipients_path, repeats, keep)
    )


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
    render process killed, see :class:`_StopWhenOrphaned`) is different: its
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

    def run(self, chunks: Iterator[list[Recipient]], stop: threading.Event | Any) -> None:
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
            "settle",
            *settle_arguments(
                prepared,
                source.handed,
                source.reissues,
                source.message_refs,
                source.recorded_refs,
            ),
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


def render_slice(
    request: RenderRequest,
    plan: RenderPlan,
    worker: int,
    run_id: str,
    stop: threading.Event | Any,
    progress: Callable[[int], None],
    lease: Lease | None = None,
    helper: HelperEnd | None = None,
) -> RunTotals:
    """A worker process's render: its own engine, the template and plan it was handed."""
    engine = open_engine(StoreConfig(request.db_url))
    try:
        template = MessageTemplate.from_compiled(plan.template)
        return _render_with(
            request, worker, run_id, stop, progress, engine, template, plan.pools, lease, helper
        )
    finally:
        engine.dispose()


def _render_with(
    request: RenderRequest,
    worker: int,
    run_id: str,
    stop: threading.Event | Any,
    progress: Callable[[int], None],
    engine: Engine,
    template: MessageTemplate,
    plan: PoolPlan,
    lease: Lease | None = None,
    helper: HelperEnd | None = None,
) -> RunTotals:
    """Render this worker's recipients chunk by chunk; stops between chunks when asked.

    With ``helper`` (the pipe to a store helper process) the chunks' store
    work runs there; otherwise in a thread of this process.
    """
    writer = request.output.open_writer(worker, run_id)
    renderer = ChunkRenderer(
        engine,
        template,
        plan,
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

    abandoned = stop.orphaned if isinstance(stop, _StopWhenOrphaned) else (lambda: False)
    client = StoreClient(helper) if helper is not None else None
    # With a helper, the helper reads the recipients and sends them with their codes.
    chunks = request.slice_of(worker).chunks() if client is None else iter(())
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


def render_mailing(
    request: RenderRequest,
    progress: Callable[[int], None] | None = None,
    *,
    engine: Engine | None = None,
    counted: Callable[[RenderCount], None] | None = None,
) -> RenderSummary:
    """Render the mailing (or this shard of it) and record the run.

    ``engine`` is the caller's own engine for ``request.db_url`` when it has
    one (the command line does); otherwise the render opens one and closes
    it at the end.

    ``progress`` is told how many more recipients were rendered and recorded,
    chunk by chunk; ``counted``, once, what the preflight found before the
    first one renders (a progress bar's total).

    Raises :class:`pools.issuing.leases.LeaseHeld` (changing nothing) while another
    run of the same mailing and shard holds its lease, and
    :class:`pools.issuing.leases.LeaseLost` when this run's lease was taken over.
    """
    started = time.monotonic()
    if engine is None:
        own = open_engine(StoreConfig(request.db_url))
        try:
            return render_mailing(request, progress, engine=own, counted=counted)
        finally:
            own.dispose()
    _start_worker_server(request)
    template, plan = plan_render(engine, request)
    # Before anything is written. Taking the lease also frees what a
    # killed run of this mailing and shard left reserved.
    lease = acquire_lease(
        engine,
        request.mailing_id,
        request.shard.label,
        scope=request.scope,
        seconds=request.lease_seconds,
        wait=request.wait_seconds,
    )
    stop = _stop_event(request.workers)
    keeper = LeaseKeeper(engine, lease, stop.set)
    try:
        with keeper:
            summary = _render_leased(
                request, progress, counted, engine, template, plan, lease, keeper, stop, started
            )
    except BaseException:
        if keeper.lost is None:
            with suppress(Exception):
                release_lease(engine, lease)
        raise
    release_lease(engine, lease)
    return summary


def _stop_event(workers: int) -> threading.Event | Any:
    if workers == 1:
        return threading.Event()
    return _worker_context().Event()


def _worker_context() -> Any:
    """How worker processes start: forked from a server that imported the render once.

    A spawned worker starts a fresh interpreter and imports the store and
    template machinery again (about half a CPU second each). The forkserver
    is itself such a process, started once per render process with this
    module preloaded; every worker is then a fork of it, ready at once.
    Never a plain fork of the render: it holds threads and open connections.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    return context


def _start_worker_server(request: RenderRequest) -> None:
    """Start the server workers and store helpers fork from now, so its
    imports overlap the preflight (when the render looks like it needs one)."""
    if _may_fork(request) and "forkserver" in multiprocessing.get_all_start_methods():
        _worker_context()
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


def _lost_lease(engine: Engine, lease: Lease, keeper: LeaseKeeper) -> LeaseLost | None:
    """Whether the run failed because its lease was taken over."""
    if keeper.lost is not None:
        return keeper.lost
    try:
        check_lease(engine, lease)
    except LeaseLost as exc:
        return exc
    except Exception:  # the store is away: the original failure says more
        return None
    return None


def _render_leased(
    request: RenderRequest,
    progress: Callable[[int], None] | None,
    counted: Callable[[RenderCount], None] | None,
    engine: Engine,
    template: MessageTemplate,
    plan: RenderPlan,
    lease: Lease,
    keeper: LeaseKeeper,
    stop: threading.Event | Any,
    started: float,
) -> RenderSummary:
    request.output.prepare()
    with read_transaction(engine) as conn:
        pool_ids = (*plan.pools.issuing, *plan.pools.reissuing)
        untouched = untouched_pools(conn, request.mailing_id, pool_ids)
        # Read once here; every worker and store helper gets it with the plan.
        ref_key = delivery_ref_key(conn)
        returns = has_returns(conn, request.mailing_id)
    plan = replace(
        plan,
        pools=replace(plan.pools, untouched=untouched, ref_key=ref_key, returns=returns),
    )
    checked = preflight(engine, request, plan.pools, count_served=counted is not None)
    total = checked.recipients
    start_run(
        engine,
        request.mailing_id,
        request.shard.label,
        request.template_path,
        request.recipients_path,
        lease,
    )
    reclaim_expired(engine)
    if counted is not None:
        counted(RenderCount(checked.recipients, checked.served_before))
    run_id = uuid.uuid4().hex[:12]
    helpers = request.store_process
    if helpers is None:
        helpers = total >= STORE_PROCESS_FROM * request.workers
    try:
        totals = _run_workers(
            request,
            run_id,
            progress or (lambda _n: None),
            engine,
            template,
            plan,
            stop,
            lease,
            helpers=helpers,
        )
        if keeper.lost is not None:
            raise keeper.lost
        request.output.finish(request.workers, run_id)
    except BaseException as exc:
        request.output.discard(request.workers, run_id)
        lost = exc if isinstance(exc, LeaseLost) else _lost_lease(engine, lease, keeper)
        if lost is not None:
            # The run that took over owns the run record now: leave it alone.
            if lost is exc:
                raise
            raise lost from exc
        finish_run(engine, request.mailing_id, request.shard.label, "failed", RunTotals())
        raise
    # The preflight counted the whole file; the workers only what they reached.
    totals.recipients = total
    summary = RenderSummary(
        mailing=request.mailing_id,
        shard=request.shard.label,
        totals=totals,
        seconds=time.monotonic() - started,
        output=str(request.output.path) if request.output.path else "-",
        took_over=lease.took_over.describe() if lease.took_over else None,
        duplicates=checked.duplicates,
        recipients_file=request.recipients_path,
    )
    # After the codes moved, never before: a failing sink only warns.
    summary.low_stock = check_low_stock(engine, plan.pools.issuing)
    finish_run(engine, request.mailing_id, request.shard.label, summary.status, totals, lease)
    return summary


class _StopOnSignal:
    """SIGINT/SIGTERM ask the render to stop after the chunk in hand."""

    def __init__(self, event: threading.Event | Any) -> None:
        self.event = event
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, _signum: int, _frame: Any) -> None:
        self.event.set()

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _run_workers(
    request: RenderRequest,
    run_id: str,
    progress: Callable[[int], None],
    engine: Engine,
    template: MessageTemplate,
    plan: RenderPlan,
    stop_event: threading.Event | Any,
    lease: Lease | None = None,
    *,
    helpers: bool = False,
) -> RunTotals:
    """Every worker's totals, added up; with ``helpers``, each worker has a store helper."""
    ends: list[HelperEnd | None] = []
    try:
        for worker in range(request.workers):
            ends.append(_start_helper(request, plan, lease, worker) if helpers else None)
        if request.workers == 1:
            # In this process: the template and plan already made serve as they are.
            with _StopOnSignal(stop_event):
                return _render_with(
                    request,
                    0,
                    run_id,
                    stop_event,
                    progress,
                    engine,
                    template,
                    plan.pools,
                    lease,
                    ends[0],
                )
        context = _worker_context()
        messages = context.Queue()
        processes = [
            context.Process(
                target=_worker_main,
                args=(
                    request,
                    plan,
                    worker,
                    run_id,
                    stop_event,
                    messages,
                    dict(os.environ),
                    lease,
                    ends[worker],
                ),
                name=f"promomail-render-{worker}",
            )
            for worker in range(request.workers)
        ]
        with _StopOnSignal(stop_event):
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
    return start_store_helper(_worker_context(), task)


def _collect(processes: list[Any], messages: Any, progress: Callable[[int], None]) -> RunTotals:
    results: dict[int, RunTotals] = {}
    errors: dict[int, str] = {}
    pending = set(range(len(processes)))
    while pending:
        # A worker's last message is in the pipe before it exits, so a worker
        # already dead while the queue then stays empty sent none: it crashed.
        dead = [i for i in pending if not processes[i].is_alive()]
        try:
            kind, worker, payload = messages.get(timeout=0.5)
        except queue.Empty:
            for index in dead:
                errors[index] = f"worker {index} died (exit code {processes[index].exitcode})"
                pending.discard(index)
            continue
        if kind == "progress":
            progress(payload)
            continue
        pending.discard(worker)
        if kind == "done":
            results[worker] = payload
        else:
            errors[worker] = payload
    for process in processes:
        process.join()
    if errors:
        raise MailingError("; ".join(errors[k] for k in sorted(errors)))
    totals = RunTotals()
    for worker in sorted(results):
        totals.add(results[worker])
    return totals


class _StopWhenOrphaned:
    """A worker's stop event that also counts as set once its render is gone.

    ``kill -9`` of the render runs no handler, so nobody sets the event: without
    this a killed render's workers would go on issuing codes, and race the
    next run of the mailing for the same recipients.
    """

    def __init__(self, event: Any, parent: int) -> None:
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


def _worker_main(
    request: RenderRequest,
    plan: RenderPlan,
    worker: int,
    run_id: str,
    stop: Any,
    messages: Any,
    environment: dict[str, str],
    lease: Lease | None = None,
    helper: HelperEnd | None = None,
) -> None:
    # Forked from a server started by an earlier render, a worker would have
    # that render's environment (the eml sender, say): it takes this one's.
    if os.environ != environment:
        os.environ.clear()
        os.environ.update(environment)
    # Ctrl-C reaches the whole process group: the parent turns it into the stop
    # event, so a worker never dies in the middle of a chunk because of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    try:
        result = render_slice(
            request,
            plan,
            worker,
            run_id,
            _StopWhenOrphaned(stop, os.getppid()),
            lambda n: messages.put(("progress", worker, n)),
            lease,
            helper,
        )
    except PromomailError as exc:
        messages.put(("error", worker, f"worker {worker}: {exc}"))
    except Exception as exc:  # reported to the parent, which fails the render
        messages.put(("error", worker, f"worker {worker} (pid {os.getpid()}): {exc!r}"))
    else:
        messages.put(("done", worker, result))
