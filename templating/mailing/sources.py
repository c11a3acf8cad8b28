"""Where ``client.promocode`` and friends get their codes.

:class:`ChunkCodes` serves one chunk of a mailing render from codes fetched
and reserved for the whole chunk, so rendering a recipient costs no database
round trip; a code is handed out only when a call is really rendered.
:class:`PreviewCodes` shows placeholders and reads, never writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Engine

from promomail.pools import ChunkHoldings, PromoCode, Reservation, latest_codes, read_transaction
from promomail.templating.choices import OnExhausted
from promomail.templating.errors import PoolRanOut

PLACEHOLDER = "[[promocode from {pool}]]"


@dataclass
class ChunkData:
    """What a chunk knows before rendering, per pool id."""

    #: What its customers already hold, read once for the chunk.
    held: ChunkHoldings = field(default_factory=ChunkHoldings)
    #: Pools with --per-customer N: N.
    per_customer: dict[str, int] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    #: The token of this chunk's reservations, for topping them up.
    token: str | None = None


class _Message:
    """One recipient's message in progress: nothing is final until it renders.

    A plain class with slots: one is built per recipient. What most messages
    never need (code lists, reissues) is created on first use.
    """

    __slots__ = ("codes", "customer_id", "handouts", "lists", "recorded", "reissues", "reused")

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.codes: dict[str, str] = {}
        self.lists: dict[str, list[str]] | None = None
        self.handouts: list[tuple[str, PromoCode]] = []
        self.reissues: list[tuple[str, str, int]] | None = None
        self.reused = 0
        #: Shows something this mailing recorded for the customer before (a re-run).
        self.recorded = False


class ChunkCodes:
    """Code source for one chunk; collects what to settle when it is done."""

    def __init__(
        self,
        refs: Mapping[str, str],
        data: ChunkData,
        on_exhausted: OnExhausted,
        refill: Callable[[str], Reservation | None] | None = None,
    ) -> None:
        self.refs = refs
        self.data = data
        self.on_exhausted = on_exhausted
        #: Called when a pool's reservation is used up: may reserve more.
        self.refill = refill
        self.handed: dict[str, list[PromoCode]] = {}
        self.reissues: list[tuple[str, str, int]] = []
        #: Customer → the delivery reference of their message, for those whose
        #: message records an issuance (the settle stamps it on each).
        self.message_refs: dict[str, str] = {}
        #: The same for messages that show what the mailing recorded before (a
        #: re-run): the settle checks those issuances carry this reference.
        self.recorded_refs: dict[str, str] = {}
        self.new_codes = 0
        self.reused_codes = 0
        self._message: _Message | None = None

    # -- one recipient at a time -------------------------------------------
    def begin(self, customer_id: str) -> None:
        self._message = _Message(customer_id)

    def shown(self) -> dict[str, str | list[str]]:
        """Pool → code(s) the recipient's message shows; nothing is kept yet."""
        message = self._current()
        if message.lists is None:
            return dict(message.codes)
        return {**message.codes, **message.lists}

    def commit(self, ref: str | None = None) -> None:
        """Keep the recipient's codes: its message (reference ``ref``) is rendered
        and can be written.

        Codes a re-run reuses keep the issuance, and the reference, they were
        recorded with: the same codes make the same reference. (When the
        message changed around them, the settle takes the old reference off.)
        """
        message = self._current()
        handouts = message.handouts
        if ref is not None:
            if handouts or message.reissues:
                self.message_refs[message.customer_id] = ref
            if message.recorded:
                self.recorded_refs[message.customer_id] = ref
        if handouts:
            handed = self.handed
            for pool_id, handout in handouts:
                kept = handed.get(pool_id)
                if kept is None:
                    handed[pool_id] = [handout]
                else:
                    kept.append(handout)
            self.new_codes += len(handouts)
        if message.reissues:
            self.reissues.extend(message.reissues)
        self.reused_codes += message.reused
        self._message = None

    def abort(self) -> None:
        """The message failed: its codes go back, nothing is recorded."""
        message = self._current()
        for pool_id, handout in reversed(message.handouts):
            self.data.reservations[pool_id].give_back(handout)
        self._message = None

    def _current(self) -> _Message:
        message = self._message
        if message is None:
            raise AssertionError("begin() a recipient first")
        return message

    # -- the CodeSource protocol --------------------------------------------
    def promocode(self, customer_id: str, pool: str) -> str:
        pool_id = self.refs[pool]
        message = self._message  # _current(), inlined: called for every code shown
        if message is None:
            raise AssertionError("begin() a recipient first")
        code = message.codes.get(pool_id)
        if code is not None:
            return code  # the same code however often the message shows it
        data = self.data
        if pool_id in data.per_customer:
            codes = self.promocodes(customer_id, pool)
            code = codes[0] if codes else ""
        else:
            existing = data.held.existing.get(pool_id)
            known = existing.get(customer_id) if existing else None
            if known is not None:
                message.reused += 1
                message.recorded = True
                code = known.code
            else:
                code = self._take(message, pool_id, 0)
        message.codes[pool_id] = code
        return code

    def promocodes(self, customer_id: str, pool: str) -> list[str]:
        pool_id = self.refs[pool]
        message = self._current()
        if message.lists is None:
            message.lists = {}
        elif pool_id in message.lists:
            # A copy each time: what a template does to its list never
            # reaches the codes the message records.
            return list(message.lists[pool_id])
        wanted = self.data.per_customer.get(pool_id, 1)
        current = self.data.held.current.get(pool_id, {}).get(customer_id, [])
        codes = [code for _, code in current[:wanted]]
        message.reused += len(codes)
        message.recorded = message.recorded or bool(codes)
        # Slots number a customer's codes within one mailing (0 is promocode's).
        next_slot = 1 + self.data.held.slots.get(pool_id, {}).get(customer_id, 0)
        while len(codes) < wanted:
            code = self._take(message, pool_id, next_slot)
            if not code:
                break
            codes.append(code)
            next_slot += 1
        message.lists[pool_id] = codes
        return list(codes)

    def last_promocode(self, customer_id: str, pool: str) -> str:
        pool_id = self.refs[pool]
        message = self._current()
        last = self.data.held.latest.get(pool_id, {}).get(customer_id)
        if last is None:
            return ""
        already = customer_id in self.data.held.reissued.get(pool_id, set())
        if already:
            message.recorded = True
        if message.reissues is None:
            message.reissues = []
        if not already and all(r[0] != pool_id for r in message.reissues):
            message.reissues.append((pool_id, customer_id, last.id))
        return last.code

    def _take(self, message: _Message, pool_id: str, slot: int) -> str:
        reservation = self.data.reservations.get(pool_id)
        code = reservation.take() if reservation is not None else None
        if code is None and self.refill is not None:
            reservation = self.refill(pool_id)
            code = reservation.take() if reservation is not None else None
        if code is None:
            if self.on_exhausted is OnExhausted.BLANK:
                return ""
            raise PoolRanOut(pool_id)
        # Multi-use codes too: recorded for everyone they are sent to.
        message.handouts.append((pool_id, code.to(message.customer_id, slot)))
        return code.code


class PreviewCodes:
    """Placeholders for new codes, real last codes; reads only."""

    def __init__(self, engine: Engine | None, refs: Mapping[str, str]) -> None:
        self.engine = engine
        self.refs = refs

    def promocode(self, customer_id: str, pool: str) -> str:
        return PLACEHOLDER.format(pool=self.refs.get(pool, pool))

    def promocodes(self, customer_id: str, pool: str) -> list[str]:
        return [self.promocode(customer_id, pool)]

    def last_promocode(self, customer_id: str, pool: str) -> str:
        pool_id = self.refs.get(pool)
        if self.engine is None or pool_id is None:
            return ""
        with read_transaction(self.engine) as conn:
            last = latest_codes(conn, pool_id, [customer_id], exclude_mailing=None)
        found = last.get(customer_id)
        return found.code if found else ""
