"""Ping a pooled PostgreSQL connection before use only when it has sat idle.

SQLAlchemy's ``pool_pre_ping`` asks the server on every checkout, which is
one more round trip for each request of a busy checkout service (two for a
redemption: its token look-up and its transaction). A connection back in
use within a moment of its last use is alive as far as anyone can tell; one
that sat idle longer may have been cut by a server restart, a failover or
a firewall, and is asked first. A dead one is replaced before anyone uses
it, as with ``pool_pre_ping``.

A server lost in the moment since a connection's last use fails the
statement that finds out, as a connection cut mid-transaction does
(``StoreUnavailable``); SQLAlchemy then renews every connection of the
pool, so the next checkout connects afresh.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

#: A connection idle longer than this is pinged before use.
PING_AFTER_IDLE_S = 1.0
_LAST_USED = "promomail_last_used"


def ping_when_idle(engine: Engine, after_seconds: float = PING_AFTER_IDLE_S) -> None:
    """Make ``engine``'s pool ping a connection on checkout if it sat idle over ``after_seconds``."""

    driver_error = engine.dialect.loaded_dbapi.Error

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last_used = record.info.get(_LAST_USED)
        if last_used is None or time.monotonic() - last_used <= after_seconds:
            return  # a new connection, or one in use a moment ago
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_connection.rollback()
        except driver_error as exc:
            # The pool discards this connection and checks out a new one.
            raise DisconnectionError("an idle connection was closed by the server") from exc
