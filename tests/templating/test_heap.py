"""A render leaves what was alive before it out of garbage collections, and
gives the process its collector back as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from promomail.templating.mailing.chunks import ChunkRenderer
from promomail.templating.mailing.heap import long_lived_frozen
from tests.support.render_helpers import (
    EVERY_PART,
    customer_ids,
    pool_with_codes,
    render,
    write_recipients,
    write_template,
)


@pytest.fixture(autouse=True)
def _nothing_frozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_objects_alive_before_are_frozen_inside_and_unfrozen_after() -> None:
    before = [object() for _ in range(10)]
    with long_lived_frozen():
        assert gc.get_freeze_count() >= len(before)
    assert gc.get_freeze_count() == 0


def test_unfrozen_after_a_failure_too() -> None:
    with pytest.raises(RuntimeError), long_lived_frozen():
        raise RuntimeError("a render failed")
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_its_own_heap_keeps_it_frozen() -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    with long_lived_frozen():
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == frozen


def test_garbage_frozen_with_the_rest_is_collected_after() -> None:
    class Node:
        partner: Any = None

    a, b = Node(), Node()
    a.partner, b.partner = b, a
    del a, b
    with long_lived_frozen():
        assert gc.collect() == 0  # the cycle is frozen: out of reach
    assert gc.collect() >= 2


def test_a_render_freezes_the_heap_while_its_chunks_render(
    engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool_with_codes(engine, "spring", 20)
    seen: list[int] = []
    chunk_render = ChunkRenderer.render

    def watched(self: ChunkRenderer, prepared: Any) -> Any:
        seen.append(gc.get_freeze_count())
        return chunk_render(self, prepared)

    monkeypatch.setattr(ChunkRenderer, "render", watched)
    summary = render(
        db_url,
        write_template(tmp_path, EVERY_PART),
        write_recipients(tmp_path, customer_ids(12)),
        "heap",
        tmp_path / "out.jsonl",
        chunk_size=5,
        store_process=False,
    )
    assert summary.ok and summary.totals.rendered == 12
    assert len(seen) == 3 and all(count > 0 for count in seen)
    assert gc.get_freeze_count() == 0
