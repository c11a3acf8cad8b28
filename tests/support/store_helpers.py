"""Helpers shared by store tests: pools with codes and table snapshots."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, text

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.choices import FileFormat
from promomail.pools.codes.imports import Upload, upload_codes

#: The tables a store operation may touch; a refused one must leave them all as they were.
SNAPSHOT_TABLES = ("pools", "import_batches", "codes", "issuances", "redemptions")


def make_pool(
    engine: Engine,
    pool_id: str,
    codes: Sequence[str] = (),
    *,
    csv_text: str | None = None,
    activate: bool = True,
    **settings: Any,
) -> None:
    """An active pool holding ``codes`` (a txt upload) and/or the codes of ``csv_text``."""
    create_pool(
        engine,
        PoolSettings(name=pool_id, description=f"test pool {pool_id}", **settings),
        pool_id=pool_id,
        activate=activate,
    )
    uploads = []
    if codes:
        data = ("\n".join(codes) + "\n").encode()
        uploads.append(Upload("codes.txt", FileFormat.TXT, stream=io.BytesIO(data)))
    if csv_text is not None:
        uploads.append(Upload("codes.csv", FileFormat.CSV, stream=io.BytesIO(csv_text.encode())))
    if uploads:
        upload_codes(engine, pool_id, uploads)


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the store's tables, in a stable order."""
    with engine.connect() as conn:
        return {
            table: [
                tuple(row) for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))
            ]
            for table in SNAPSHOT_TABLES
        }


def count_rows(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
