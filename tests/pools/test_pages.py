"""Keyset pages of the unbounded lists: every record once, in order, whatever the page size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from promomail.pools.errors import InvalidCursor
from promomail.pools.history.customers import customer_history
from promomail.pools.history.pages import (
    Page,
    customer_page,
    decode_cursor,
    encode_cursor,
    issuance_page,
    segment_page,
)
from promomail.pools.history.segments import segment
from tests.support.cli_helpers import Cli
from tests.support.store_helpers import make_pool


def _render(db_url: str, folder: Path, mailing: str, ids: list[str]) -> None:
    template = folder / "t.j2"
    template.write_text("{{ client.promocode('paged') }}")
    recipients = folder / f"{mailing}.csv"
    recipients.write_text("id\n" + "".join(f"{i}\n" for i in ids))
    done = Cli(db_url)(
        "render", str(template), "--recipients", str(recipients), "--mailing", mailing,
        "--out", str(folder / f"{mailing}.jsonl"),
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr


def _collect(fetch: Any) -> list[Any]:
    items: list[Any] = []
    after = None
    while True:
        page: Page = fetch(after)
        items.extend(page.items)
        if page.next is None:
            return items
        after = page.next


@pytest.fixture
def history(engine: Engine, db_url: str, tmp_path: Path) -> Engine:
    make_pool(engine, "paged", [f"P-{i}" for i in range(20)])
    _render(db_url, tmp_path, "one", ["c1", "c2", "c3", "c4", "c5"])
    _render(db_url, tmp_path, "two", ["c1", "c6", "c7"])
    _render(db_url, tmp_path, "three", ["c1"])
    return engine


@pytest.mark.parametrize("limit", [1, 2, 7, 100])
def test_pages_hold_every_record_once(history: Engine, limit: int) -> None:
    everything = issuance_page(history, limit=1000).items
    assert len(everything) == 9
    assert _collect(lambda after: issuance_page(history, after=after, limit=limit)) == everything
    ids = _collect(lambda after: segment_page(history, after=after, limit=limit))
    assert ids == segment(history)
    full = customer_history(history, "c1")
    paged = _collect(lambda after: customer_page(history, "c1", after=after, limit=limit))
    assert paged == [i.as_dict() for i in full.issuances]


def test_pools_narrow_the_lists(history: Engine) -> None:
    make_pool(history, "empty", ["E-1"])
    assert issuance_page(history, pools={"empty"}).items == []
    assert segment_page(history, pools={"empty"}).items == []
    assert customer_page(history, "c1", pools={"empty"}).items == []
    assert len(issuance_page(history, pools={"paged"}).items) == 9


def test_cursors_are_checked(history: Engine) -> None:
    assert decode_cursor(encode_cursor(41), int) == 41
    for bad in ("%%", encode_cursor("text"), encode_cursor(True)):
        with pytest.raises(InvalidCursor):
            issuance_page(history, after=bad)
    with pytest.raises(InvalidCursor):
        customer_page(history, "c1", after=encode_cursor([1]))
