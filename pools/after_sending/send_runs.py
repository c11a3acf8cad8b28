"""One ``send`` run of a mailing (or of one shard of it) at a time, on the store's log.

A send run takes its own lease (:mod:`pools.issuing.leases`, label
``send|SHARD``): a second run of the same mailing and shard is refused
naming the first, so two runs never hand the same deferred message to the
relay at once. Sending and rendering hold different leases: a batch task
may send its shard while another task still renders its own.

The lease is renewed in the background while the run sends; when another
run took it over (this one stalled past its expiry), the log refuses to
hand over any further message (:class:`pools.errors.LeaseLost`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import Engine, exists, select

from promomail.pools.admin.lookup import unknown_mailing
from promomail.pools.after_sending.send_log import DeliveryLog
from promomail.pools.choices import DEFAULT_LEASE_SECONDS
from promomail.pools.issuing.leases import (
    LeaseKeeper,
    acquire_lease,
    release_lease,
    send_lease_label,
)
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Mailing


def _scope(mailing_id: str, shard: str) -> str:
    """Reservations a send run frees when it takes its lease: none exist.

    A render's scope is ``MAILING|all`` or ``MAILING|K/N``; this one's last
    part is neither, so taking a send lease never frees a render's codes.
    """
    return f"{mailing_id}|send {shard}"


@contextmanager
def send_run(
    engine: Engine,
    mailing_id: str,
    shard: str,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    wait: float = 0.0,
) -> Iterator[DeliveryLog]:
    """The log of a send run of ``mailing_id``'s ``shard`` (``all`` or ``K/N``),
    holding the run's lease until the block ends.

    Raises
    :class:`MailingNotFound` for a mailing the store never rendered and
    :class:`pools.errors.LeaseHeld` while another run sends the same
    messages; either way nothing was written.
    """
    with read_transaction(engine) as conn:
        if not conn.execute(select(exists().where(Mailing.id == mailing_id))).scalar():
            raise unknown_mailing(conn, mailing_id)
    lease = acquire_lease(
        engine,
        mailing_id,
        send_lease_label(shard),
        scope=_scope(mailing_id, shard),
        seconds=lease_seconds,
        wait=wait,
    )
    lost = threading.Event()
    keeper = LeaseKeeper(engine, lease, lost.set)

    def check() -> None:
        if lost.is_set() and keeper.lost is not None:
            raise keeper.lost

    try:
        with keeper, DeliveryLog(engine, mailing_id, check=check) as log:
            yield log
    except BaseException:
        if keeper.lost is None:
            with suppress(Exception):
                release_lease(engine, lease)
        raise
    if keeper.lost is None:
        release_lease(engine, lease)


__all__ = ["send_run"]
