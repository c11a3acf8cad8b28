"""Rendering one chunk of recipients against the store.

A chunk costs one read (what its recipients already have), one write
(reserve codes for those who need them) and one write (record what was
handed out and release the rest), however many recipients it holds. A chunk
whose reservation runs short (codes it expected went to a concurrent
mailing) tops it up before applying the ``--on-exhausted`` policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Engine

from promomail.pools import (
    Lease,
    PoolView,
    PromoCode,
    Reservation,
    ReservationLost,
    RunTotals,
    StoreConflict,
    check_lease,
    chunk_holdings,
    message_ref,
    release,
    reserve_many,
    settle,
)
from promomail.templating.choices import OnExhausted
from promomail.templating.errors import MailingError, PoolRanOut, RecipientFailed, UnwritableMessage
from promomail.templating.mailing.outputs import Encoded, RenderedMessage
from promomail.templating.mailing.recipients import PLAIN_ADDRESS, Recipient, one_address
from promomail.templating.mailing.sources import ChunkCodes, ChunkData
from promomail.templating.template.client import Client
from promomail.templating.template.message import MessageTemplate

#: Attempts at a chunk whose reserved codes were taken back (voided) meanwhile.
SETTLE_ATTEMPTS = 3


@dataclass(frozen=True)
class PoolPlan:
    """The pools a template uses, resolved to ids, with their kinds.

    Loaded from the store once per run and handed to its worker processes.
    """

    refs: dict[str, str]  # as written in the template → pool id
    issuing: tuple[str, ...]
    reissuing: tuple[str, ...]
    per_customer: dict[str, int] = field(default_factory=dict)
    #: Every pool of ``refs``, as loaded when the run was planned.
    pools: dict[str, PoolView] = field(default_factory=dict)
    #: Pools the mailing held no issuance from when the run began
    #: (:func:`pools.issuing.holdings.untouched_pools`).
    untouched: frozenset[str] = frozenset()
    #: The store's delivery reference key, read once per run.
    ref_key: bytes = b""
    #: Whether the mailing had given codes back when the run began
    #: (:func:`pools.issuing.holdings.has_returns`).
    returns: bool = False

    @property
    def issuing_counts(self) -> dict[str, int | None]:
        """Issuing pool → codes per customer (None: one per customer per mailing)."""
        return {pool_id: self.per_customer.get(pool_id) for pool_id in self.issuing}


class Abandoned(Exception):
    """A chunk's settle not started because the run is gone; its codes went back."""


def _unencoded(message: RenderedMessage) -> bytes:
    raise NotImplementedError("ChunkRenderer needs the output writer's encode")


@dataclass
class RenderedChunk:
    """A chunk rendered: its messages, to be written once settled, and its totals."""

    #: Encoded for the writer.
    messages: list[Encoded] = field(default_factory=list)
    totals: RunTotals = field(default_factory=RunTotals)


@dataclass
class Prepared:
    """A chunk with what its recipients already have and the codes held for it."""

    chunk: list[Recipient]
    data: ChunkData
    #: Reserved by the renderer itself while rendering (a reservation run short).
    topped_up: list[Reservation] = field(default_factory=list)
    #: The store helper's number for the chunk it prepared: it settles the
    #: chunk with the reservations it keeps under that number.
    ticket: int | None = None

    @property
    def reservations(self) -> list[Reservation]:
        return list(self.data.reservations.values())


@dataclass
class ChunkStore:
    """What a chunk asks of the store: what its customers hold and codes
    reserved for it (prepare), then its issuances recorded (settle).

    Works on ids, codes and reservations only, never on recipients' fields,
    so it can run in a process of its own (:mod:`templating.mailing.store_helper`).
    """

    engine: Engine
    plan: PoolPlan
    mailing_id: str
    scope: str
    #: The run's lease: a chunk is settled only while the run holds it.
    lease: Lease | None = None

    def prepare(self, ids: list[str]) -> ChunkData:
        held = chunk_holdings(
            self.engine,
            self.mailing_id,
            ids,
            issuing=self.plan.issuing_counts,
            reissuing=self.plan.reissuing,
            untouched=self.plan.untouched,
            returns=self.plan.returns,
        )
        data = ChunkData(held, dict(self.plan.per_customer))
        needed = self._needed(data, ids)
        if needed:
            data.reservations = reserve_many(self.engine, needed, scope=self.scope)
            data.token = next(iter(data.reservations.values())).token
        return data

    def settle(
        self,
        reservations: list[Reservation],
        handed: Mapping[str, Sequence[PromoCode]],
        reissues: Sequence[tuple[str, str, int]],
        refs: Mapping[str, str],
        recorded: Mapping[str, str],
    ) -> None:
        """Record the chunk; on any failure its codes go back to the pool."""
        try:
            if self.lease is not None:
                check_lease(self.engine, self.lease)
            settle(self.engine, self.mailing_id, reservations, handed, reissues, refs, recorded)
        except StoreConflict as exc:
            # Only a second run of the same mailing and shard, at the same
            # time, can give these recipients codes between prepare and settle.
            self.release(reservations)
            raise MailingError(
                f"mailing {self.mailing_id!r}: another run is rendering the same recipients "
                "at this moment; run one render per mailing and shard at a time"
            ) from exc
        except BaseException:
            self.release(reservations)
            raise

    def release(self, reservations: list[Reservation]) -> None:
        if reservations:
            release(self.engine, reservations)

    def _needed(self, data: ChunkData, ids: list[str]) -> dict[str, int]:
        needed: dict[str, int] = {}
        for pool_id in self.plan.issuing:
            wanted = self.plan.per_customer.get(pool_id)
            if wanted is None:
                needed[pool_id] = len(ids) - len(data.held.existing[pool_id])
            else:
                current = data.held.current[pool_id]
                needed[pool_id] = sum(max(0, wanted - len(current.get(c, []))) for c in ids)
        return {pool_id: n for pool_id, n in needed.items() if n > 0}


@dataclass
class ChunkRenderer:
    """The three steps of a chunk: prepare (read, reserve), render, settle.

    They are separate so a worker can overlap the database steps of one chunk
    with rendering the next (see :mod:`templating.mailing.pipeline`); :meth:`render_now`
    runs them in order.
    """

    engine: Engine
    template: MessageTemplate
    plan: PoolPlan
    mailing_id: str
    scope: str
    on_exhausted: OnExhausted
    variables: Mapping[str, Any]
    #: Called before a pool's reservation is topped up, so codes released by
    #: chunks still being settled are back in the pool first.
    before_refill: Callable[[], None] = lambda: None
    #: The output writer's encode: refuses a message that cannot be written
    #: while its recipient can still fail alone, before any code is recorded.
    encode: Callable[[RenderedMessage], bytes] = _unencoded
    #: Named in the failures that come from a recipient's own values.
    recipients_path: str = "recipients"
    #: The run's lease, checked before each settle.
    lease: Lease | None = None

    @property
    def store(self) -> ChunkStore:
        return ChunkStore(self.engine, self.plan, self.mailing_id, self.scope, self.lease)

    def prepare(self, chunk: list[Recipient]) -> Prepared:
        return Prepared(chunk, self.store.prepare([r.id for r in chunk]))

    def render(self, prepared: Prepared) -> tuple[RenderedChunk, ChunkCodes]:
        """Render every recipient of the chunk; touches the store only to top up."""
        remaining = len(prepared.chunk)

        def refill(pool_id: str) -> Reservation | None:
            self.before_refill()
            # The recipient being rendered needs codes too, not only those after it.
            wanted = (remaining + 1) * self.plan.per_customer.get(pool_id, 1)
            more = reserve_many(
                self.engine, {pool_id: wanted}, scope=self.scope, token=prepared.data.token
            )[pool_id]
            prepared.data.token = more.token
            # A copy: ``more`` itself may become the pool's reservation and grow.
            prepared.topped_up.append(replace(more, codes=list(more.codes)))
            held = prepared.data.reservations.get(pool_id)
            if held is None:
                prepared.data.reservations[pool_id] = more
                return more
            held.top_up(more)
            return held

        source = ChunkCodes(self.plan.refs, prepared.data, self.on_exhausted, refill)
        result = RenderedChunk()
        totals = result.totals
        render = self.template.render
        encode = self.encode
        mailing_id = self.mailing_id
        variables = self.variables
        plain = PLAIN_ADDRESS.fullmatch
        begin, shown, commit = source.begin, source.shown, source.commit
        ref_key = self.plan.ref_key
        returned = prepared.data.held.returned.get
        kept = result.messages
        # One timer for the chunk instead of one per message (see MessageTemplate.timed).
        with self.template.timed():
            for recipient in prepared.chunk:
                remaining -= 1
                email = recipient.fields.get("email")
                try:
                    # The plain address, the common case, without a call.
                    to = email if type(email) is str and plain(email) else one_address(email)
                except ValueError as exc:
                    # Checked before rendering: one code must not reach two people.
                    totals.fail(
                        recipient.id, recipient.line, self._at(recipient, exc), self._no_address
                    )
                    continue
                recipient_id = recipient.id
                begin(recipient_id)
                client = Client(recipient_id, recipient.fields, source)
                try:
                    parts = render({**variables, "client": client})
                    codes = shown()
                    ref = message_ref(
                        ref_key, mailing_id, recipient_id, codes, returned(recipient_id, 0)
                    )
                    data = encode(RenderedMessage(mailing_id, recipient_id, to, parts, codes, ref))
                except RecipientFailed as exc:
                    source.abort()
                    totals.fail(recipient.id, recipient.line, str(exc))
                    continue
                except UnwritableMessage as exc:
                    source.abort()
                    totals.fail(recipient.id, recipient.line, *self._unwritable(recipient, exc))
                    continue
                except PoolRanOut as exc:
                    source.abort()
                    if self.on_exhausted is OnExhausted.SKIP:
                        totals.skip(
                            recipient.id, recipient.line, f"pool {exc.pool_id!r} ran out of codes"
                        )
                        continue
                    totals.stopped_at_pool = exc.pool_id
                    break
                commit(ref)
                kept.append((recipient_id, data))
        totals.recipients = len(prepared.chunk)
        totals.rendered = len(kept)
        totals.new_codes = source.new_codes
        totals.reused_codes = source.reused_codes
        return result, source

    def _at(self, recipient: Recipient, exc: ValueError, column: str = "email") -> str:
        return f"{self.recipients_path}, line {recipient.line}, column {column!r}: {exc}"

    @property
    def _no_address(self) -> str:
        """What every recipient failed for its address has in common."""
        return f"{self.recipients_path}, column 'email': not exactly one e-mail address"

    def _unwritable(self, recipient: Recipient, exc: UnwritableMessage) -> tuple[str, str]:
        """The reason, naming the recipient's column that brought the character in,
        and the same without the line (the failure's kind)."""
        if exc.character is not None:
            for column, value in recipient.fields.items():
                if isinstance(value, str) and exc.character in value:
                    where = f"{self.recipients_path}, line {recipient.line}, column {column!r}"
                    kind = f"{self.recipients_path}, column {column!r}"
                    why = f"the message cannot be written: {exc}"
                    return f"{where}: {why}", f"{kind}: {why}"
        reason = f"{self.template.name}: the message cannot be written: {exc}"
        return reason, reason

    def settle(self, prepared: Prepared, source: ChunkCodes) -> None:
        """Record the chunk; on any failure its codes go back to the pool."""
        self.store.settle(
            prepared.reservations,
            source.handed,
            source.reissues,
            source.message_refs,
            source.recorded_refs,
        )

    def release(self, prepared: Prepared) -> None:
        self.store.release(prepared.reservations)

    def render_now(self, chunk: list[Recipient]) -> RenderedChunk:
        """Prepare, render and settle one chunk, again if its codes were taken back."""
        for attempt in range(SETTLE_ATTEMPTS):
            prepared = self.prepare(chunk)
            try:
                result, source = self.render(prepared)
            except BaseException:
                self.release(prepared)
                raise
            try:
                self.settle(prepared, source)
            except ReservationLost:
                if attempt == SETTLE_ATTEMPTS - 1:
                    raise
                continue
            return result
        raise AssertionError("unreachable")
