"""Withdrawing a wrong upload: its never-issued codes become void."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Engine, exists, func, not_, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from promomail.pools.admin.lifecycle import load_pool
from promomail.pools.codes.counts import held_now
from promomail.pools.codes.notifications import LowStockAlert, check_low_stock
from promomail.pools.errors import BatchNotFound
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import write_transaction
from promomail.pools.store.dialect_sql import locked_held_tokens
from promomail.pools.store.models import Code, CodeStatus, HeldCodes, ImportBatch


@dataclass(frozen=True)
class VoidReport:
    """A voided batch: the codes voided, the issued ones kept, and any low-stock alert."""

    pool: str
    batch: int
    voided: int
    kept_issued: int
    #: The pool's low-stock alert when the voided codes took it below its
    #: threshold (the notice sent as after a render).
    low_stock: list[LowStockAlert] = field(default_factory=list, compare=False)

    def as_dict(self, *, details: bool = True) -> dict[str, Any]:
        """The report; ``details=False`` leaves out why a low-stock delivery failed."""
        return {
            "pool": self.pool,
            "batch": self.batch,
            "voided": self.voided,
            "kept_issued": self.kept_issued,
            "low_stock": [alert.as_dict(details=details) for alert in self.low_stock],
        }


def void_batch(
    engine: Engine, pool_id: str, batch_id: int, *, smtp_url: str | None = None
) -> VoidReport:
    """Void the batch's available and reserved codes; issued ones stay issued.

    Reserved codes are voided too: the render holding them then fails to
    settle that chunk and takes other codes, so a withdrawn code is never sent.
    Fewer codes are left: the pool's low-stock check runs, as after a render.
    """
    report = _void(engine, pool_id, batch_id)
    return replace(report, low_stock=check_low_stock(engine, [pool_id], smtp_url=smtp_url))


def _void(engine: Engine, pool_id: str, batch_id: int) -> VoidReport:
    with write_transaction(engine) as conn:
        load_pool(conn, pool_id)
        batch = conn.execute(
            select(ImportBatch).where(ImportBatch.id == batch_id, ImportBatch.pool_id == pool_id)
        ).first()
        if batch is None:
            raise BatchNotFound(pool_id, batch_id)
        voided = _void_codes(conn, batch_id)
        kept = conn.execute(
            select(func.count()).where(
                Code.batch_id == batch_id, Code.status == CodeStatus.ISSUED, _not_held()
            )
        ).scalar_one()
        conn.execute(
            update(ImportBatch).where(ImportBatch.id == batch_id).values(voided_at=utcnow())
        )
        return VoidReport(pool_id, batch_id, int(voided), int(kept))


def _not_held() -> ColumnElement[bool]:
    return not_(func.coalesce(held_now(), False))


def _void_codes(conn: Connection, batch_id: int) -> int:
    """Void the batch's available codes and those held by open reservations.

    A reserved code is stored as issued under its reservation's token, so
    it is voided only once that reservation's ``held_codes`` rows are locked
    here: a settle of it running now either finished first (its codes are
    issued for good, its unused ones back in ``available``, voided on the
    next pass) or fails afterwards on the voided codes. Renders keep
    reserving while this runs (on PostgreSQL), so the passes repeat until
    one statement sees nothing left to void in the batch.
    """
    in_batch = Code.batch_id == batch_id
    # A void code is refused at checkout, so a checkout hold on it ends too.
    void = {
        "status": CodeStatus.VOID,
        "reserved_token": None,
        "hold_order": None,
        "hold_until": None,
    }
    voided = 0
    while True:
        tokens = list(
            conn.execute(
                select(Code.reserved_token).distinct().where(in_batch, held_now())
            ).scalars()
        )
        if tokens:
            locked = locked_held_tokens(conn, HeldCodes.token.in_(tokens))
            if locked:
                voided += conn.execute(
                    update(Code)
                    .where(
                        in_batch,
                        Code.status == CodeStatus.ISSUED,
                        Code.reserved_token.in_(set(locked)),
                    )
                    .values(**void)
                ).rowcount
        voided += conn.execute(
            update(Code).where(in_batch, Code.status == CodeStatus.AVAILABLE).values(**void)
        ).rowcount
        left = conn.execute(
            select(exists().where(in_batch, or_(Code.status == CodeStatus.AVAILABLE, held_now())))
        ).scalar()
        if not left:
            return voided
