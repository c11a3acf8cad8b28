"""Withdrawing a wrong upload: its never-issued codes become void."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select, update

from pools.clock import utcnow
from pools.db import write_transaction
from pools.errors import PoolError
from pools.models import Code, CodeStatus, ImportBatch
from pools.pool_admin import load_pool


@dataclass(frozen=True)
class VoidReport:
    pool: str
    batch: int
    voided: int
    kept_issued: int


def void_batch(engine: Engine, pool_id: str, batch_id: int) -> VoidReport:
    """Void the batch's available and reserved codes; issued ones stay issued.

    Reserved codes are voided too: the render holding them then fails to
    settle that chunk and takes other codes, so a withdrawn code is never sent.
    """
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
