"""One running render per mailing and shard: leases kept in the store.

Two runs of the same mailing and shard at once would each reclaim the
other's reservations and race for the same recipients, so a run first takes
the shard's lease: a row naming the holder (host, pid, when it started) with
an expiry that the running process keeps pushing forward while it renders.
A second run finds the lease alive and is refused at once with the holder
named (or waits for it, when asked to). Because the lease lives in the store
it holds across machines sharing one PostgreSQL database.

Shards split a mailing's recipients only when they split it the same way:
``1/2`` and ``2/2`` run side by side, but a run of the whole mailing (or of
``1/3``) while ``1/2`` renders would render some of the same recipients, so
it is refused too, naming the run in its way.

A holder that died (``kill -9``, a lost machine) stops renewing; once its
lease has expired the next run takes it over. On the holder's own machine a
dead process is recognised at once (same kernel and pid namespace, no such
pid), so a re-run after a crash there need not wait for the expiry.

Taking a lease also frees every code still reserved under the shard's scope,
in the same transaction: from then on a settle by a superseded holder finds
its reservation gone and records nothing. A holder whose renewal or check
finds the lease in other hands gets :class:`LeaseLost` and stops.

Time is the database's clock on PostgreSQL (machines' clocks may differ;
the store's is the one they share) and the local clock on SQLite, which
lives on one machine.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, text, update

from promomail.pools.choices import DEFAULT_LEASE_SECONDS
from promomail.pools.errors import LeaseHeld, LeaseLost, PromomailError
from promomail.pools.issuing.claiming import free_held
from promomail.pools.issuing.lease_holder import LeaseHolder
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import is_postgres, read_transaction, write_transaction
from promomail.pools.store.dialect_sql import insert_if_absent
from promomail.pools.store.models import HeldCodes, ShardLease

#: A lease is renewed this many times per duration, so one late renewal
#: (a busy database, a slow chunk) does not let it expire.
RENEWALS_PER_LEASE = 3
#: How often a run that waits for another one looks again, at most.
WAIT_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Lease:
    """A lease this process holds; picklable, so worker processes can check it."""

    mailing_id: str
    shard: str
    holder: str
    host: str
    pid: int
    started_at: datetime
    seconds: float
    #: The expired holder this run took the lease from, if any.
    took_over: LeaseHolder | None = None

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.seconds)


def store_now(conn: Connection) -> datetime:
    """Now, naive UTC, by the clock every holder of a lease compares against."""
    if is_postgres(conn):
        moment = conn.execute(text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")).scalar_one()
        assert isinstance(moment, datetime)
        return moment
    return utcnow()


def this_node() -> str:
    """Host, boot and pid namespace: where a pid means the same process.

    Empty where that cannot be told (no /proc): then a lease is only ever
    taken over after it expired.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{socket.gethostname()}|{boot}|{namespace}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: it exists
        return False
    return False


def _holder_of(row: Any) -> LeaseHolder:
    return LeaseHolder(row.host, row.pid, row.started_at, row.expires_at)


def _is_dead(row: Any, now: datetime) -> bool:
    if row.expires_at <= now:
        return True
    node = this_node()
    return bool(node) and row.node == node and row.pid != os.getpid() and _process_gone(row.pid)


def _free_scope(conn: Connection, scope: str) -> None:
    """Codes reserved under the scope go back, so a superseded holder cannot issue them."""
    free_held(conn, HeldCodes.scope == scope)


#: The lease of a send run: ``send|`` and the shard (``send|all``, ``send|2/4``).
#: Sending and rendering are different work on different rows: a send of a
#: shard may run while the render of another (or the same) one goes on.
SEND_LEASE = "send|"


def send_lease_label(shard: str) -> str:
    """The lease a send run of ``shard`` (``all`` or ``K/N``) takes."""
    return SEND_LEASE + shard


def _work_of(label: str) -> tuple[str, str]:
    """(kind of run, shard): ``("send|", "2/4")`` or ``("", "all")`` for a render."""
    if label.startswith(SEND_LEASE):
        return SEND_LEASE, label.removeprefix(SEND_LEASE)
    return "", label


def _shard_count(label: str) -> int:
    """How many shards the mailing is cut into: ``all`` is 1, ``K/N`` is N."""
    shard = _work_of(label)[1]
    return 1 if shard == "all" else int(shard.rpartition("/")[2])


def _mailing_lock(conn: Connection, mailing_id: str) -> None:
    """PostgreSQL: one lease decision per mailing at a time (SQLite writers are serial)."""
    if is_postgres(conn):
        digest = hashlib.blake2b(f"lease|{mailing_id}".encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _in_the_way(conn: Connection, mailing_id: str, shard: str, now: datetime) -> Any:
    """A live run of the same work (render or send) on another shard of this
    mailing that splits it differently, if any."""
    others = conn.execute(
        select(ShardLease).where(ShardLease.mailing_id == mailing_id, ShardLease.shard != shard)
    ).all()
    kind = _work_of(shard)[0]
    count = _shard_count(shard)
    return next(
        (
            o
            for o in others
            if _work_of(o.shard)[0] == kind
            and _shard_count(o.shard) != count
            and not _is_dead(o, now)
        ),
        None,
    )


def _try_acquire(
    engine: Engine, mailing_id: str, shard: str, scope: str, seconds: float, now: datetime | None
) -> Lease:
    holder = uuid.uuid4().hex
    host = socket.gethostname()
    pid = os.getpid()
    where = (ShardLease.mailing_id == mailing_id, ShardLease.shard == shard)
    with write_transaction(engine) as conn:
        _mailing_lock(conn, mailing_id)
        moment = now or store_now(conn)
        blocking = _in_the_way(conn, mailing_id, shard, moment)
        if blocking is not None:
            raise LeaseHeld(mailing_id, blocking.shard, _holder_of(blocking))
        values = {
            "holder": holder,
            "host": host,
            "node": this_node(),
            "pid": pid,
            "started_at": moment,
            "renewed_at": moment,
            "expires_at": moment + timedelta(seconds=seconds),
        }
        # FOR UPDATE: of two runs taking over one expired lease, the second
        # waits here and then sees the first one's fresh lease.
        row = conn.execute(select(ShardLease).where(*where).with_for_update()).first()
        took_over = None
        if row is None:
            fresh = insert_if_absent(
                conn, ShardLease, {"mailing_id": mailing_id, "shard": shard, **values}
            )
            if not fresh:  # another run inserted it between our read and our insert
                row = conn.execute(select(ShardLease).where(*where)).one()
                raise LeaseHeld(mailing_id, shard, _holder_of(row))
        elif _is_dead(row, moment):
            took_over = _holder_of(row)
            conn.execute(update(ShardLease).where(*where).values(**values))
        else:
            raise LeaseHeld(mailing_id, shard, _holder_of(row))
        _free_scope(conn, scope)
    return Lease(mailing_id, shard, holder, host, pid, moment, seconds, took_over)


def acquire_lease(
    engine: Engine,
    mailing_id: str,
    shard: str,
    *,
    scope: str,
    seconds: float = DEFAULT_LEASE_SECONDS,
    wait: float = 0.0,
    now: datetime | None = None,
) -> Lease:
    """Take the shard's lease and free what earlier runs left reserved under ``scope``.

    Raises :class:`LeaseHeld` naming the live holder, at once or, with
    ``wait`` seconds, once waiting that long did not see it end.
    """
    if not seconds > 0:
        raise PromomailError(f"a lease must last more than 0 seconds, not {seconds:g}")
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            return _try_acquire(engine, mailing_id, shard, scope, seconds, now)
        except LeaseHeld:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(WAIT_POLL_SECONDS, left))


def _current_holder(conn: Connection, lease: Lease) -> Any:
    return conn.execute(
        select(ShardLease).where(
            ShardLease.mailing_id == lease.mailing_id, ShardLease.shard == lease.shard
        )
    ).first()


def _lost(lease: Lease, row: Any) -> LeaseLost:
    return LeaseLost(lease.mailing_id, lease.shard, _holder_of(row) if row is not None else None)


def renew_lease(engine: Engine, lease: Lease, *, now: datetime | None = None) -> datetime:
    """Push the lease's expiry forward; returns the new expiry, or raises LeaseLost."""
    with write_transaction(engine) as conn:
        moment = now or store_now(conn)
        expires = moment + lease.ttl
        renewed = conn.execute(
            update(ShardLease)
            .where(
                ShardLease.mailing_id == lease.mailing_id,
                ShardLease.shard == lease.shard,
                ShardLease.holder == lease.holder,
            )
            .values(renewed_at=moment, expires_at=expires)
        )
        if renewed.rowcount != 1:
            raise _lost(lease, _current_holder(conn, lease))
    return expires


def ensure_held(conn: Connection, lease: Lease) -> None:
    """Inside a transaction: raise LeaseLost unless this run still holds the lease.

    A lease past its expiry that nobody took over is still held: its
    holder was only slow, and its next renewal extends it.
    """
    row = _current_holder(conn, lease)
    if row is None or row.holder != lease.holder:
        raise _lost(lease, row)


def check_lease(engine: Engine, lease: Lease) -> None:
    """Raise LeaseLost unless this run still holds the lease (before each settle)."""
    with read_transaction(engine) as conn:
        ensure_held(conn, lease)


def release_lease(engine: Engine, lease: Lease) -> bool:
    """End the lease (the run is over); False when it was no longer this run's."""
    with write_transaction(engine) as conn:
        result = conn.execute(
            delete(ShardLease).where(
                ShardLease.mailing_id == lease.mailing_id,
                ShardLease.shard == lease.shard,
                ShardLease.holder == lease.holder,
            )
        )
        return bool(result.rowcount)


def lease_holder(engine: Engine, mailing_id: str, shard: str) -> LeaseHolder | None:
    """Who holds the shard's lease now (alive or expired), or None."""
    with read_transaction(engine) as conn:
        row = conn.execute(
            select(ShardLease).where(ShardLease.mailing_id == mailing_id, ShardLease.shard == shard)
        ).first()
    return _holder_of(row) if row is not None else None


class LeaseKeeper:
    """Renews a lease in a background thread while the run renders.

    When a renewal finds the lease in other hands it records :attr:`lost`
    and calls ``on_lost`` (which stops the render); a renewal that fails for
    another reason (the database briefly away) is tried again next time.
    """

    def __init__(self, engine: Engine, lease: Lease, on_lost: Callable[[], None]) -> None:
        self.engine = engine
        self.lease = lease
        self.on_lost = on_lost
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promomail-lease", daemon=True)

    def _run(self) -> None:
        interval = self.lease.seconds / RENEWALS_PER_LEASE
        while not self._stop.wait(interval):
            try:
                renew_lease(self.engine, self.lease)
            except LeaseLost as exc:
                self.lost = exc
                self.on_lost()
                return
            except Exception:  # retried at the next renewal
                continue

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
