"""A worker's chunk store in a process of its own.

A render worker overlaps the store work of its chunks with rendering. In a
thread of the worker that work shares the interpreter lock with the render:
its Python time is taken from the render, and each time a driver call
returns the thread waits for the lock, so the render then waits for the
chunk it needs next. A helper process runs the same :class:`ChunkStore`
with its own connection and its own interpreter. It also reads the
worker's recipients, so the worker's interpreter does not parse the file
either: it asks for the next chunk and gets the recipients with what they
hold and the codes reserved for them.

The helper answers requests in the order they were sent. It ends when the
worker closes its end of the pipe, or dies: the worker holds the only other
end, so a killed worker (or a killed single-process render) leaves no
helper behind. A settle never starts once the run is gone: neither when
the worker has found its render gone (it says so through a shared flag,
which also stops settles it sent before), nor when the server the helper
was forked from has ended with the render (its parent changed).
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, replace
from itertools import count
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from promomail.pools import ChunkHoldings, Lease, PromoCode, Reservation, StoreConfig, open_engine
from promomail.templating.errors import MailingError
from promomail.templating.mailing.chunks import Abandoned, ChunkStore, PoolPlan, Prepared
from promomail.templating.mailing.heap import long_lived_frozen
from promomail.templating.mailing.recipients import Recipient, RecipientSlice
from promomail.templating.mailing.sources import ChunkData

#: A helper pays for itself from this many recipients per worker; smaller
#: renders keep their store work in a thread (a process costs a start-up).
STORE_PROCESS_FROM = 5_000


# -- the messages between a worker and its helper -------------------------------------


@dataclass(frozen=True)
class NextChunk:
    """Asks for the worker's next chunk: answered with a :data:`_WirePrepared`, or
    None after the last."""


@dataclass(frozen=True)
class Settle:
    """Asks to settle a prepared chunk: its ticket, the codes the worker reserved
    itself, who got which code, the reissues, and the messages' references."""

    ticket: int
    topped_up: list[_WireReservation]
    handed: dict[str, list[_WireHandout]]
    reissues: list[tuple[str, str, int]]
    refs: dict[str, str]
    recorded: dict[str, str]


@dataclass(frozen=True)
class Finished:
    """The worker is done: the helper ends once it has answered everything before."""


#: What a worker asks of its helper.
Request = NextChunk | Settle | Finished


@dataclass(frozen=True)
class Answered:
    """A request done; ``value`` is what it returned."""

    value: Any


@dataclass(frozen=True)
class Raised:
    """A request failed: the worker decides what ``error`` means."""

    error: BaseException


#: What the helper answers each request (but :class:`Finished`), in order.
Answer = Answered | Raised


class HelperEnd(NamedTuple):
    """The worker's end of a helper: the pipe, and the flag that says the run is gone."""

    connection: Connection
    gone: Any  # a multiprocessing Event

    def close(self) -> None:
        self.connection.close()


@dataclass(frozen=True)
class HelperTask:
    """What a helper serves: a worker's recipients and its chunks' store steps."""

    db_url: str
    plan: PoolPlan
    mailing_id: str
    #: The reservations' scope (the mailing and shard).
    scope: str
    lease: Lease | None
    recipients: RecipientSlice


def start_store_helper(context: Any, task: HelperTask) -> HelperEnd:
    """Start a helper process; returns the worker's end of it (hand it to the worker)."""
    ours, theirs = context.Pipe()
    gone = context.Event()
    process = context.Process(
        target=_serve,
        args=(theirs, gone, task),
        name="promomail-store",
        daemon=True,
    )
    process.start()
    # From now on only the helper holds its end: its end of file is ours closing.
    theirs.close()
    return HelperEnd(ours, gone)


class StoreClient:
    """The worker's side of a helper: each request returns a future, answered in order."""

    def __init__(self, end: HelperEnd) -> None:
        self.connection = end.connection
        self.gone = end.gone
        self._pending: deque[Future[Any]] = deque()
        self._sending = threading.Lock()
        self._reader = threading.Thread(
            target=self._read, name="promomail-store-reader", daemon=True
        )
        self._reader.start()

    def submit(self, request: NextChunk | Settle) -> Future[Any]:
        future: Future[Any] = Future()
        with self._sending:
            self._pending.append(future)
            try:
                self.connection.send(request)
            except (OSError, ValueError) as exc:
                self._pending.pop()
                raise _helper_gone() from exc
        return future

    def next_chunk(self) -> Future[Prepared | None]:
        """The worker's next chunk, read and prepared by the helper (None after the last)."""
        prepared: Future[Prepared | None] = Future()

        def arrived(answer: Future[Any]) -> None:
            # A callback's exception is only logged: one raised here would
            # leave the worker waiting for this chunk for ever.
            try:
                error = answer.exception()
                if error is not None:
                    prepared.set_exception(error)
                else:
                    prepared.set_result(_prepared_from_wire(answer.result()))
            except BaseException as exc:
                prepared.set_exception(exc)

        self.submit(NextChunk()).add_done_callback(arrived)
        return prepared

    def abandon(self) -> None:
        """The run is gone: no settle starts from now on, sent or not."""
        self.gone.set()

    def _read(self) -> None:
        while True:
            try:
                answer: Answer = self.connection.recv()
            except (EOFError, OSError):
                break
            future = self._pending.popleft()
            match answer:
                case Answered(value):
                    future.set_result(value)
                case Raised(error):
                    future.set_exception(error)
        while self._pending:
            self._pending.popleft().set_exception(_helper_gone())

    def close(self) -> None:
        """Ask the helper to end once it has answered everything asked of it."""
        with self._sending, suppress(OSError, ValueError):
            self.connection.send(Finished())
        self._reader.join()
        self.connection.close()


def _helper_gone() -> MailingError:
    return MailingError("the render's store process ended unexpectedly")


def _serve(connection: Connection, gone: Any, task: HelperTask) -> None:
    # Ctrl-C reaches the whole process group: the render decides when to stop,
    # and the helper ends when its worker does. (A SIGTERM ends it at once:
    # its transaction in progress, if any, is rolled back.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    engine = open_engine(StoreConfig(task.db_url))
    store = ChunkStore(engine, task.plan, task.mailing_id, task.scope, task.lease)
    chunks = task.recipients.chunks()
    # The reservations of every chunk sent and not yet settled, by ticket:
    # the worker sends back only which codes went to whom.
    kept: dict[int, dict[str, Reservation]] = {}
    tickets = count()

    def next_chunk() -> _WirePrepared | None:
        chunk = next(chunks, None)
        if chunk is None:
            return None
        data = store.prepare([r.id for r in chunk])
        ticket = next(tickets)
        kept[ticket] = dict(data.reservations)
        return ticket, [tuple(r) for r in chunk], _data_to_wire(data)

    def settle(request: Settle) -> None:
        reserved = kept.pop(request.ticket, None)
        if reserved is None:
            raise MailingError(
                f"chunk {request.ticket} was settled already, or never prepared here"
            )
        tops = _reservations_from_wire(request.topped_up)
        try:
            if gone.is_set() or os.getppid() != parent:
                raise Abandoned
            held = _with_top_ups(reserved, tops)
            handouts = _handouts(held, request.handed)
        except BaseException:
            # Nothing of the chunk is settled: all its codes go back.
            store.release([*reserved.values(), *tops])
            raise
        # It releases them itself on failure.
        store.settle(held, handouts, request.reissues, request.refs, request.recorded)

    def handle(request: NextChunk | Settle) -> Any:
        match request:
            case NextChunk():
                return next_chunk()
            case Settle():
                return settle(request)

    try:
        with long_lived_frozen():
            closed = _answer(connection, handle)
        if closed:
            # The worker is done, or failed: what it was sent and did not
            # settle goes back now. (A worker that died leaves it to the
            # next run of the mailing, which reclaims it with the lease.)
            store.release([r for held in kept.values() for r in held.values()])
    finally:
        engine.dispose()


def _answer(connection: Connection, handle: Callable[[NextChunk | Settle], Any]) -> bool:
    """Answer the worker's requests, in order, until it says it is done (True)
    or is gone (False)."""
    while True:
        try:
            request: Request = connection.recv()
        except (EOFError, OSError):
            return False
        if isinstance(request, Finished):
            return True
        answer: Answer
        try:
            answer = Answered(handle(request))
        except BaseException as exc:  # answered: the worker decides what it means
            answer = Raised(_sendable(exc))
        try:
            connection.send(answer)
        except (OSError, ValueError):
            return False


def _with_top_ups(kept: dict[str, Reservation], topped_up: list[Reservation]) -> list[Reservation]:
    """The chunk's reservations as the worker holds them after its own top-ups."""
    for more in topped_up:
        held = kept.get(more.pool_id)
        if held is None:
            kept[more.pool_id] = more
        else:
            held.top_up(more)
    return list(kept.values())


def _handouts(
    reservations: list[Reservation], handed: dict[str, list[_WireHandout]]
) -> dict[str, list[PromoCode]]:
    """Pool → the reserved codes handed out, each to its customer and slot."""
    by_id = {code.id: code for r in reservations for code in r.codes}
    try:
        return {
            pool: [by_id[code_id].to(customer, slot) for code_id, customer, slot in rows]
            for pool, rows in handed.items()
        }
    except KeyError as exc:
        raise MailingError(f"code {exc.args[0]} was handed out but never reserved") from exc


# -- what crosses the pipe -----------------------------------------------------------
#
# Codes go as plain tuples: pickle handles those in C, while a named tuple
# costs it a Python call each way, several microseconds per recipient of
# the render's own time. The worker needs a reserved code's id and text
# only (it gets no issuing window), and sends back (id, customer, slot) for
# each code it handed out, and each such customer's message reference once:
# the helper settles with the codes it reserved.

_WireReservation = tuple[str, str, str, bool, list[tuple[Any, ...]]]
_WireHandout = tuple[int, str, int]
_WireData = tuple[ChunkHoldings, dict[str, int], list[_WireReservation], str | None]
#: A chunk's ticket, its recipients and its :class:`ChunkData`.
_WirePrepared = tuple[int, list[tuple[Any, ...]], _WireData]
_new_tuple = tuple.__new__


def _codes(rows: Iterable[tuple[Any, ...]]) -> list[PromoCode]:
    return [_new_tuple(PromoCode, row) for row in rows]


def _plain(codes: Iterable[PromoCode]) -> list[tuple[Any, ...]]:
    return [tuple(code) for code in codes]


def _id_and_text(codes: Iterable[PromoCode]) -> list[tuple[Any, ...]]:
    """What the worker needs of a reserved code (see above)."""
    return [(None, c.id, c.code, None, 0) for c in codes]


def _reservations_to_wire(
    reservations: Iterable[Reservation],
    codes: Callable[[Iterable[PromoCode]], list[tuple[Any, ...]]] = _plain,
) -> list[_WireReservation]:
    return [(r.pool_id, r.scope, r.token, r.exclusive, codes(r.codes)) for r in reservations]


def _reservations_from_wire(wire: Iterable[_WireReservation]) -> list[Reservation]:
    return [
        Reservation(pool_id, scope, token, _codes(rows), exclusive)
        for pool_id, scope, token, exclusive, rows in wire
    ]


def _held_by_customer(
    codes: dict[str, dict[str, Any]], convert: Callable[[Any], Any]
) -> dict[str, dict[str, Any]]:
    return {pool: {c: convert(code) for c, code in by.items()} for pool, by in codes.items()}


def _data_to_wire(data: ChunkData) -> _WireData:
    held = data.held
    plain = replace(
        held,
        existing=_held_by_customer(held.existing, tuple),
        latest=_held_by_customer(held.latest, tuple),
    )
    reserved = _reservations_to_wire(data.reservations.values(), _id_and_text)
    return plain, data.per_customer, reserved, data.token


def _prepared_from_wire(wire: _WirePrepared | None) -> Prepared | None:
    if wire is None:
        return None
    ticket, recipients, data = wire
    chunk = [_new_tuple(Recipient, r) for r in recipients]
    return Prepared(chunk, _data_from_wire(data), ticket=ticket)


def _data_from_wire(wire: _WireData) -> ChunkData:
    plain, per_customer, reservations, token = wire
    held = replace(
        plain,
        existing=_held_by_customer(plain.existing, lambda row: _new_tuple(PromoCode, row)),
        latest=_held_by_customer(plain.latest, lambda row: _new_tuple(PromoCode, row)),
    )
    found = {r.pool_id: r for r in _reservations_from_wire(reservations)}
    return ChunkData(held, per_customer, found, token)


def settle_request(
    prepared: Prepared,
    handed: Mapping[str, Iterable[PromoCode]],
    reissues: list[tuple[str, str, int]],
    refs: Mapping[str, str],
    recorded: Mapping[str, str],
) -> Settle:
    """The :class:`Settle` request of a chunk the helper prepared."""
    if prepared.ticket is None:
        raise ValueError("only a chunk its store helper prepared is settled there")
    return Settle(
        prepared.ticket,
        _reservations_to_wire(prepared.topped_up),
        {pool: [(c.id, c.customer_id, c.slot) for c in codes] for pool, codes in handed.items()},
        reissues,
        dict(refs),
        dict(recorded),
    )


def _sendable(exc: BaseException) -> BaseException:
    """The exception itself when it survives the pipe, else one that says the same."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return MailingError(f"{type(exc).__name__}: {exc}")
    return exc
