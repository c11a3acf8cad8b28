"""Racing real processes against one store, released at the same moment.

Kept apart from the other helpers and light on imports: every spawned
process imports this module, and the work functions import the store only
inside the child.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable, Sequence
from typing import Any


def _trampoline(
    target: Callable[..., Any],
    barrier: Any,
    results: Any,
    index: int,
    args: tuple[Any, ...],
) -> None:
    try:
        results.put((index, True, target(barrier, *args)))
    except BaseException:
        barrier.abort()
        results.put((index, False, traceback.format_exc()))


def run_together(
    target: Callable[..., Any], arg_tuples: Sequence[tuple[Any, ...]], *, timeout: float = 120.0
) -> list[Any]:
    """Run ``target(barrier, *args)`` in one spawned process per argument tuple.

    Each target does its own set-up (opening an engine from a URL), waits on
    the barrier so that all of them act at the same moment, and returns a
    picklable result. Returns the results in argument order; a failure in
    any process fails the caller with that process's traceback.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(arg_tuples), timeout=timeout)
    results = context.Queue()
    processes = [
        context.Process(target=_trampoline, args=(target, barrier, results, index, args))
        for index, args in enumerate(arg_tuples)
    ]
    for process in processes:
        process.start()
    try:
        answers = [results.get(timeout=timeout) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join()
            process.close()
        results.close()
        results.join_thread()
    failures = [detail for _, ok, detail in answers if not ok]
    if failures:
        raise AssertionError("a racing process failed:\n" + "\n".join(failures))
    return [detail for _, _, detail in sorted(answers, key=lambda answer: answer[0])]


def redeem_when_released(
    barrier: Any, url: str, code: str, customer: str
) -> tuple[bool, str | None]:
    """Open an engine, wait for the others, redeem: returns (ok, reason)."""
    from sqlalchemy import text

    from promomail.pools.after_sending.redemption import redeem
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        with engine.connect() as conn:  # a pooled connection ready before the start
            conn.execute(text("SELECT 1"))
        barrier.wait()
        result = redeem(engine, code, customer=customer, order=f"order-{customer}")
        return result.ok, result.reason
    finally:
        engine.dispose()


def check_low_stock_when_released(barrier: Any, url: str, pool_id: str, now: str) -> str:
    """Open an engine, wait for the others, check the pool: returns the notice status."""
    from datetime import datetime

    from sqlalchemy import text

    from promomail.pools.codes.notifications import check_low_stock
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        barrier.wait()
        [alert] = check_low_stock(engine, [pool_id], now=datetime.fromisoformat(now))
        return str(alert.notice)
    finally:
        engine.dispose()


def redeem_order_when_released(
    barrier: Any, url: str, code: str, customer: str, order: str
) -> tuple[bool, str | None, bool]:
    """Open an engine, wait for the others, redeem for ``order``: (ok, reason, replayed)."""
    from sqlalchemy import text

    from promomail.pools.after_sending.redemption import redeem
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        barrier.wait()
        result = redeem(engine, code, customer=customer, order=order)
        return result.ok, result.reason, result.replayed
    finally:
        engine.dispose()


def unredeem_when_released(barrier: Any, url: str, code: str, order: str | None) -> str:
    """Open an engine, wait for the others, roll back: "rolled back" or the refusal."""
    from sqlalchemy import text

    from promomail.pools.after_sending.rollback import unredeem
    from promomail.pools.errors import PromomailError
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        barrier.wait()
        try:
            unredeem(engine, code, order=order)
        except PromomailError as exc:
            return str(exc)
        return "rolled back"
    finally:
        engine.dispose()


def return_when_released(barrier: Any, url: str, mailing: str, customers: list[str]) -> int:
    """Open an engine, wait for the others, return the mailing's codes: how many went back."""
    from sqlalchemy import text

    from promomail.pools.after_sending.returns import return_codes
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        barrier.wait()
        return return_codes(engine, mailing, customers, reason="bounce").returned
    finally:
        engine.dispose()


def claim_when_released(
    barrier: Any, url: str, pool_id: str, mailing: str, customers: list[str]
) -> dict[str, str]:
    """Open an engine, wait for the others, claim one code per customer."""
    from promomail.pools.issuing.claiming import claim
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        barrier.wait()
        return claim(engine, pool_id, mailing, customers)
    finally:
        engine.dispose()


def apply_event_when_released(barrier: Any, url: str, event_id: str, ref: str) -> str:
    """Open an engine, wait for the others, apply a permanent bounce of ``ref``."""
    from sqlalchemy import text

    from promomail.pools.after_sending.delivery_events import apply_event
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        barrier.wait()
        return apply_event(
            engine,
            provider="race",
            event_id=event_id,
            ref=ref,
            kind="bounce",
            permanent=True,
            at=None,
            detail="550 gone",
        )
    finally:
        engine.dispose()


def hold_when_released(barrier: Any, url: str, code: str, order: str) -> tuple[bool, str | None]:
    """Open an engine, wait for the others, hold ``code`` for ``order``: (ok, reason)."""
    from sqlalchemy import text

    from promomail.pools.after_sending.holds import hold_code
    from promomail.pools.store.db import StoreConfig, open_engine

    engine = open_engine(StoreConfig(url), migrate=False)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        barrier.wait()
        result = hold_code(engine, code, order=order)
        return result.ok, result.reason
    finally:
        engine.dispose()
