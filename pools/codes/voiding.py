"""Withdrawing a wrong upload: its never-issued codes become void."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Engine, func, select, update

from pools.admin.lifecycle import load_pool
from pools.codes.notifications import LowStockAlert, check_low_stock
from pools.errors import PoolError
from pools.store.clock import utcnow
from pools.store.db import write_transaction
from pools.store.models import Code, CodeStatus, ImportBatch


@dataclass(frozen=True)
class VoidReport:
    pool: str
    batch: int
    voided: int
    kept_issued: int
    #: The pool's low-stock alert when the voided codes took it below its
    #: threshold (the notice sent as after a render).
    low_stock: list[LowStockAlert] = field(default_factory=list, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "batch": self.batch,
            "voided": self.voided,
            "kept_issued": self.kept_issued,
            "low_stock": [alert.as_dict() for alert in self.low_stock],
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
            raise PoolError(f"pool {pool_id!r} has no import batch {batch_id}")
        voided = conn.execute(
            update(Code)
            .where(
                Code.batch_id == batch_id,
                Code.status.in_([CodeStatus.AVAILABLE, CodeStatus.RESERVED]),
            )
            .values(
                status=CodeStatus.VOID,
                reserved_scope=None,
                reserved_token=None,
                reserved_until=None,
            )
        ).rowcount
        kept = conn.execute(
            select(func.count()).where(Code.batch_id == batch_id, Code.status == CodeStatus.ISSUED)
        ).scalar_one()
        conn.execute(
            update(ImportBatch).where(ImportBatch.id == batch_id).values(voided_at=utcnow())
        )
        return VoidReport(pool_id, batch_id, int(voided), int(kept))
