"""Rendering a whole mailing: plan, lease, preflight, workers, summary.

Safe to re-run with the same mailing id at any point (after a crash, a kill,
an interrupt, a pool running out): recipients who already have codes in the
mailing get the same codes, the others get new ones, and the output again
holds every recipient. One run per mailing and shard renders at a time: a
run first takes the shard's lease (:mod:`pools.issuing.leases`), which refuses a
second run naming the first, and frees the reservations a killed run of the
same mailing and shard left behind. The lease is renewed while the run
renders; a run that finds it taken over stops without settling anything more.

This module is the run around the workers; the rest lives beside it:
:mod:`~templating.mailing.request` (what a render is asked and reports),
:mod:`~templating.mailing.planning` (the template, its pools, the preflight),
:mod:`~templating.mailing.workers` (starting the workers, their messages),
:mod:`~templating.mailing.pipeline` (one worker's chunks) and
:mod:`~templating.mailing.stopping` (signals, a render that is gone).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace

from sqlalchemy import Engine

from promomail.pools import (
    Lease,
    LeaseKeeper,
    LeaseLost,
    RunTotals,
    StoreConfig,
    acquire_lease,
    check_lease,
    check_low_stock,
    delivery_ref_key,
    finish_run,
    has_returns,
    open_engine,
    read_transaction,
    reclaim_expired,
    release_lease,
    start_run,
    untouched_pools,
)
from promomail.templating.mailing.pipeline import WorkerJob
from promomail.templating.mailing.planning import RenderPlan, plan_render, preflight
from promomail.templating.mailing.request import RenderCount, RenderRequest, RenderSummary
from promomail.templating.mailing.stopping import StopFlag
from promomail.templating.mailing.store_helper import STORE_PROCESS_FROM
from promomail.templating.mailing.workers import run_workers, start_worker_server, worker_context
from promomail.templating.template.message import MessageTemplate


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
    start_worker_server(request)
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
                request,
                progress=progress,
                counted=counted,
                engine=engine,
                template=template,
                plan=plan,
                lease=lease,
                keeper=keeper,
                stop=stop,
                started=started,
            )
    except BaseException:
        if keeper.lost is None:
            with suppress(Exception):
                release_lease(engine, lease)
        raise
    release_lease(engine, lease)
    return summary


def _stop_event(workers: int) -> StopFlag:
    if workers == 1:
        return threading.Event()
    return worker_context().Event()


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
    *,
    progress: Callable[[int], None] | None,
    counted: Callable[[RenderCount], None] | None,
    engine: Engine,
    template: MessageTemplate,
    plan: RenderPlan,
    lease: Lease,
    keeper: LeaseKeeper,
    stop: StopFlag,
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
        totals = run_workers(
            WorkerJob(request, plan, 0, run_id, lease),
            progress or (lambda _n: None),
            engine,
            template,
            stop,
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
    finish_run(engine, request.mailing_id, request.shard.label, totals.status, totals, lease)
    return summary
