"""The run's state: the store named by ``--db``, opened on first use.

``--help`` and shell completion never touch a database: the engine is opened
by the first command that asks for it and disposed with the root context.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from promomail.pools import DEFAULT_URL

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem
    from sqlalchemy import Engine


@dataclass
class State:
    url: str
    engine: Engine | None = None
    #: Set once a command has already reported an upload's problems (``--json``).
    problems_reported: bool = False


@contextmanager
def _disposing(engine: Engine) -> Iterator[Engine]:
    try:
        yield engine
    finally:
        engine.dispose()


def get_state(ctx: click.Context) -> State:
    state = ctx.find_root().obj
    assert isinstance(state, State)
    return state


def get_engine(ctx: click.Context, *, migrate: bool = True, create: bool = True) -> Engine:
    """The store's engine, opened (and migrated) on first use in this run.

    A command that only reads passes ``create=False``: a SQLite store that
    does not exist is then an error naming its path, never a new empty file.
    """
    from promomail.pools import StoreConfig, open_engine

    state = get_state(ctx)
    if state.engine is None:
        engine = open_engine(StoreConfig(state.url), migrate=migrate, create=create)
        state.engine = ctx.find_root().with_resource(_disposing(engine))
    return state.engine


def complete_pool_id(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of a pool id: the store's pools (``--db`` or PROMOMAIL_DB), by id.

    Runs only when a pool id is being completed: the store is opened here,
    read, and closed; completing a command or an option never opens it.
    """
    from click.shell_completion import CompletionItem

    from promomail.pools import pool_choices

    url = ctx.find_root().params.get("db_url") or DEFAULT_URL
    return [CompletionItem(pool_id, help=name) for pool_id, name in pool_choices(url, incomplete)]
