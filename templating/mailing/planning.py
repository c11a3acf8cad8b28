"""Planning a render once, before any code moves: the template compiled and
its pools resolved (:func:`plan_render`), then the whole recipients file read
and the pools checked against it (:func:`preflight`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

from sqlalchemy import Engine

from promomail.pools import (
    PoolExhausted,
    PoolStatus,
    PoolView,
    PromomailError,
    available_count,
    issued_customers_in,
    load_pool,
    not_issuing,
    read_transaction,
    served_customers_in,
    shared_code,
    told_where,
    utcnow,
)
from promomail.templating.choices import OnExhausted
from promomail.templating.errors import InvalidTemplate
from promomail.templating.mailing.chunks import PoolPlan
from promomail.templating.mailing.columns import check_columns
from promomail.templating.mailing.recipients import (
    Duplicate,
    duplicates_in,
    read_recipients,
    slice_filter,
)
from promomail.templating.mailing.request import RenderCount, RenderRequest
from promomail.templating.template.message import CompiledTemplate, MessageTemplate

#: Recipient ids looked up per query when the preflight counts who is served.
PREFLIGHT_BATCH = 5_000


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
