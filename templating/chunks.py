"""Rendering one chunk of recipients against the store.

A chunk costs one read (what its recipients already have), one write
(reserve codes for those who need them) and one write (record what was
handed out and release the rest), however many recipients it holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from pools.claiming import Reservation, existing_codes, release, reserve_many, settle
from pools.db import read_transaction
from pools.errors import ReservationLost
from pools.lookups import latest_codes, reissued_customers, slots_used, unredeemed_codes
from templating.client import Client
from templating.message import MessageTemplate, RecipientFailed
from templating.outputs import RenderedMessage
from templating.recipients import Recipient
from templating.sources import ChunkCodes, ChunkData, OnExhausted, PoolRanOut

#: Attempts at a chunk whose reserved codes were taken back (voided) meanwhile.
SETTLE_ATTEMPTS = 3


@dataclass(frozen=True)
class PoolPlan:
    """The pools a template uses, resolved to ids, with their kinds."""

    refs: dict[str, str]  # as written in the template → pool id
    issuing: tuple[str, ...]
    reissuing: tuple[str, ...]
    per_customer: dict[str, int] = field(default_factory=dict)


@dataclass
class ChunkResult:
    messages: list[RenderedMessage] = field(default_factory=list)
    failed: list[tuple[str, int, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    new_codes: int = 0
    reused_codes: int = 0
    stopped_at_pool: str | None = None


@dataclass
class ChunkRenderer:
    engine: Engine
    template: MessageTemplate
    plan: PoolPlan
    mailing_id: str
    scope: str
    on_exhausted: OnExhausted
    variables: Mapping[str, Any]

    def render(self, chunk: Sequence[Recipient]) -> ChunkResult:
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                return self._attempt(chunk)
            except ReservationLost:
                if attempt == SETTLE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _prefetch(self, ids: list[str]) -> ChunkData:
        data = ChunkData(per_customer=dict(self.plan.per_customer))
        with read_transaction(self.engine) as conn:
            for pool_id in self.plan.issuing:
                if pool_id in self.plan.per_customer:
                    data.current[pool_id] = unredeemed_codes(conn, pool_id, ids)
                    data.slots[pool_id] = slots_used(conn, self.mailing_id, pool_id, ids)
                else:
                    data.existing[pool_id] = existing_codes(conn, self.mailing_id, pool_id, ids)
            for pool_id in self.plan.reissuing:
                data.latest[pool_id] = latest_codes(
                    conn, pool_id, ids, exclude_mailing=self.mailing_id
                )
                data.reissued[pool_id] = reissued_customers(conn, self.mailing_id, pool_id, ids)
        return data

    def _needed(self, data: ChunkData, ids: list[str]) -> dict[str, int]:
        needed: dict[str, int] = {}
        for pool_id in self.plan.issuing:
            wanted = self.plan.per_customer.get(pool_id)
            if wanted is None:
                needed[pool_id] = len(ids) - len(data.existing[pool_id])
            else:
                current = data.current[pool_id]
                needed[pool_id] = sum(max(0, wanted - len(current.get(c, []))) for c in ids)
        return {pool_id: n for pool_id, n in needed.items() if n > 0}

    def _attempt(self, chunk: Sequence[Recipient]) -> ChunkResult:
        ids = [r.id for r in chunk]
        data = self._prefetch(ids)
        needed = self._needed(data, ids)
        if needed:
            data.reservations = reserve_many(self.engine, needed, scope=self.scope)
        reservations: list[Reservation] = list(data.reservations.values())
        try:
            result, source = self._render_all(chunk, data)
            settle(self.engine, self.mailing_id, reservations, source.handed, source.reissues)
        except BaseException:
            if reservations:
                release(self.engine, reservations)
            raise
        result.new_codes = source.new_codes
        result.reused_codes = source.reused_codes
        return result

    def _render_all(
        self, chunk: Sequence[Recipient], data: ChunkData
    ) -> tuple[ChunkResult, ChunkCodes]:
        source = ChunkCodes(self.plan.refs, data, self.on_exhausted)
        result = ChunkResult()
        render = self.template.render
        for recipient in chunk:
            source.begin(recipient.id)
            client = Client(recipient.id, recipient.fields, source)
            try:
                parts = render({**self.variables, "client": client})
            except RecipientFailed as exc:
                source.abort()
                result.failed.append((recipient.id, recipient.line, str(exc)))
                continue
            except PoolRanOut as exc:
                source.abort()
                if self.on_exhausted is OnExhausted.SKIP:
                    result.skipped.append((recipient.id, f"pool {exc.pool_id!r} ran out of codes"))
                    continue
                result.stopped_at_pool = exc.pool_id
                break
            codes = source.commit()
            email = recipient.fields.get("email")
            result.messages.append(
                RenderedMessage(
                    self.mailing_id, recipient.id, str(email) if email else None, parts, codes
                )
            )
        return result, source
