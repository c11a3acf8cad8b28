"""The pool ids a shell offers when a user presses Tab after a pool argument.

Completion runs on every Tab, before the user has chosen to run anything, so
it only reads: a SQLite file that does not exist is not created, the schema
is not migrated, and a store that cannot be read offers nothing rather than
an error in the middle of the user's command line.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import make_url, select

from promomail.pools.errors import PromomailError
from promomail.pools.store.db import StoreConfig, open_engine, read_transaction
from promomail.pools.store.models import Pool

#: Ids offered at most: a shell shows them all, and more are no help.
MAX_OFFERED = 200


def _missing_sqlite_file(config: StoreConfig) -> bool:
    url = make_url(config.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return False
    return not Path(url.database).expanduser().is_file()


def pool_choices(url: str, prefix: str) -> list[tuple[str, str]]:
    """``(id, name)`` of the pools whose id starts with ``prefix``, by id; [] when unreadable."""
    try:
        config = StoreConfig(url)
        if _missing_sqlite_file(config):
            return []
        engine = open_engine(config, migrate=False)
        try:
            with read_transaction(engine) as conn:
                rows = conn.execute(
                    select(Pool.id, Pool.name)
                    .where(Pool.id.startswith(prefix, autoescape=True))
                    .order_by(Pool.id)
                    .limit(MAX_OFFERED)
                ).all()
        finally:
            engine.dispose()
    except PromomailError:
        return []
    return [(row.id, row.name) for row in rows]
