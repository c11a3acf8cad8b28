"""The DESIGN.md invariants, checked against the database itself.

Used by the fault tests (after every kill, cut or full disk) and by the
stateful test (after every step). Each check reads the tables directly with
SQL, so it does not trust the library code it is checking, and each failure
names the invariant it breaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, text

from promomail.pools.codes.counts import PARTS, pool_counts
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Code
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT


#: A code held by an open reservation (stored as issued under its token).
_HELD = "(c.status = 'issued' AND c.reserved_token IN (SELECT token FROM held_codes))"


def _rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with read_transaction(engine) as conn:
        return [tuple(row) for row in conn.execute(text(sql), params)]


def check_invariants(engine: Engine, *, redemptions_possible: bool = True) -> None:
    """Every store invariant that must hold whenever no render is in progress…

    …except "no code reserved", which a killed render legitimately breaks
    until the next run of its mailing: see :func:`check_no_reservations`.
    """
    # 1. A single-use code is held (a live initial issuance) by at most one customer;
    # only a return (the message never delivered) frees it for someone else.
    twice = _rows(
        engine,
        "SELECT code_id, count(*) FROM issuances WHERE exclusive AND kind = 'initial' "
        "AND returned_at IS NULL GROUP BY code_id HAVING count(*) > 1",
    )
    assert not twice, f"invariant 1: single-use codes held by two customers: {twice[:5]}"
    returned_in_use = _rows(
        engine,
        "SELECT i.code_id FROM issuances i JOIN codes c ON c.id = i.code_id "
        "WHERE i.returned_at IS NOT NULL AND i.exclusive AND i.kind = 'initial' "
        "AND c.redemptions > 0 AND EXISTS (SELECT 1 FROM redemptions r WHERE "
        "r.code_id = i.code_id AND r.rolled_back_at IS NULL AND r.issued_to = i.customer_id) "
        # A re-run may hand the same customer the same code again: then it is theirs.
        "AND NOT EXISTS (SELECT 1 FROM issuances j WHERE j.code_id = i.code_id "
        "AND j.customer_id = i.customer_id AND j.kind = 'initial' AND j.returned_at IS NULL)",
    )
    assert not returned_in_use, (
        f"invariant 1: redeemed codes returned from their holder: {returned_in_use[:5]}"
    )
    shared = _rows(
        engine,
        "SELECT i.code_id FROM issuances i JOIN pools p ON p.id = i.pool_id "
        "WHERE i.kind = 'initial' AND i.exclusive = p.multi_use",
    )
    assert not shared, (
        f"invariant 1: issuance exclusivity differs from its pool's mode: {shared[:5]}"
    )
    # 2. One initial code per (mailing, pool, customer) (and slot, for per-customer pools).
    doubled = _rows(
        engine,
        "SELECT mailing_id, pool_id, customer_id, slot, count(*) FROM issuances "
        "WHERE kind = 'initial' AND returned_at IS NULL "
        "GROUP BY mailing_id, pool_id, customer_id, slot "
        "HAVING count(*) > 1",
    )
    assert not doubled, f"invariant 2: two initial codes for one customer: {doubled[:5]}"
    # 4. No code lost: a code recorded for a customer is out of the pool for good,
    # and a code out of the pool (issued) is recorded for a customer — or was
    # redeemed at a checkout before any mailing handed it out.
    not_out = _rows(
        engine,
        "SELECT c.id, c.status FROM codes c JOIN issuances i ON i.code_id = c.id "
        "WHERE i.exclusive AND i.kind = 'initial' AND i.returned_at IS NULL "
        "AND c.status <> 'issued'",
    )
    assert not not_out, f"invariant 4: issued codes back in the pool: {not_out[:5]}"
    # (A code held by an open reservation is stored as issued, not yet recorded.)
    unrecorded = _rows(
        engine,
        "SELECT c.id, c.redemptions FROM codes c JOIN pools p ON p.id = c.pool_id "
        f"WHERE c.status = 'issued' AND NOT p.multi_use AND NOT {_HELD} AND NOT EXISTS ("
        "SELECT 1 FROM issuances i WHERE i.code_id = c.id AND i.kind = 'initial' "
        "AND i.returned_at IS NULL)",
    )
    lost = [row for row in unrecorded if not (redemptions_possible and row[1] > 0)]
    assert not lost, f"invariant 4: codes out of the pool but recorded for nobody: {lost[:5]}"
    # A token on a code out of the pool only: freeing or voiding a code clears it.
    stray = _rows(
        engine,
        "SELECT id, status FROM codes c WHERE status NOT IN ('available', 'issued', 'void') "
        "OR (status <> 'issued' AND reserved_token IS NOT NULL)",
    )
    assert not stray, f"invariant 4: codes in an unknown or inconsistent state: {stray[:5]}"
    # 8. A single-use code has at most one live redemption, an order at most one live
    # redemption of a code, and a code's count is its live redemptions.
    doubled_redemptions = _rows(
        engine,
        "SELECT code_id, count(*) FROM redemptions WHERE exclusive AND rolled_back_at IS NULL "
        "GROUP BY code_id HAVING count(*) > 1",
    )
    assert not doubled_redemptions, (
        f"invariant 8: single-use codes redeemed twice: {doubled_redemptions[:5]}"
    )
    order_twice = _rows(
        engine,
        "SELECT code_id, order_id, count(*) FROM redemptions WHERE order_id IS NOT NULL "
        "AND rolled_back_at IS NULL GROUP BY code_id, order_id HAVING count(*) > 1",
    )
    assert not order_twice, f"invariant 8: an order counted twice: {order_twice[:5]}"
    miscounted = _rows(
        engine,
        "SELECT c.id, c.redemptions, (SELECT count(*) FROM redemptions r WHERE "
        "r.code_id = c.id AND r.rolled_back_at IS NULL) AS live FROM codes c "
        "WHERE c.redemptions <> (SELECT count(*) FROM redemptions r WHERE "
        "r.code_id = c.id AND r.rolled_back_at IS NULL)",
    )
    assert not miscounted, f"invariant 8: redemption counts differ from the log: {miscounted[:5]}"
    twice_by_customer = _rows(
        engine,
        "SELECT code_id, redeemed_by, count(*) FROM redemptions WHERE once_per_customer "
        "AND rolled_back_at IS NULL GROUP BY code_id, redeemed_by HAVING count(*) > 1",
    )
    assert not twice_by_customer, (
        f"invariant 8: a once-per-customer code redeemed twice by one customer: "
        f"{twice_by_customer[:5]}"
    )
    # 13. A code has at most one live hold (its row carries one), and a hold
    # never outlasts what it guards: the holder's redemption ends it, a void
    # ends it, and a shared code is never held.
    halves = _rows(
        engine,
        "SELECT id, hold_order, hold_until FROM codes "
        "WHERE (hold_order IS NULL) <> (hold_until IS NULL)",
    )
    assert not halves, f"invariant 13: holds without an order or an end: {halves[:5]}"
    stale = _rows(
        engine,
        "SELECT c.id, c.status, c.redemptions FROM codes c JOIN pools p ON p.id = c.pool_id "
        "WHERE c.hold_order IS NOT NULL AND (c.redemptions > 0 OR c.status = 'void' "
        "OR p.multi_use)",
    )
    assert not stale, f"invariant 13: holds on redeemed, void or shared codes: {stale[:5]}"
    # 5. Counts derived from the codes add up, and match a plain count of rows.
    with read_transaction(engine) as conn:
        derived = pool_counts(conn)
    totals = dict(_rows(engine, "SELECT pool_id, count(*) FROM codes GROUP BY pool_id"))
    assert sorted(derived) == sorted(totals)
    for pool_id, c in derived.items():
        parts = c.available + c.pending + c.reserved + c.issued + c.expired + c.void
        assert c.total == parts == totals[pool_id], f"invariant 5: {pool_id}: {c}"
        # What people read: the parts shown after the total add up to it, and
        # no count is left off the screen.
        shown = dict(c.shown())
        assert shown.keys() == c.as_dict().keys(), f"a count is not shown: {c}"
        assert shown["total"] == sum(shown[part] for part in PARTS), f"invariant 5: {c}"
        assert c.redeemed <= c.redemptions, f"invariant 5: {pool_id}: {c}"


def check_no_reservations(engine: Engine) -> None:
    """Between renders nothing may stay reserved (invariant 4)."""
    held = _rows(
        engine,
        "SELECT h.pool_id, h.scope, count(*) FROM codes c JOIN held_codes h "
        f"ON h.token = c.reserved_token WHERE {_HELD} GROUP BY h.pool_id, h.scope",
    )
    assert not held, f"invariant 4: codes left reserved: {held}"
    open_reservations = _rows(engine, "SELECT token, scope FROM held_codes")
    assert not open_reservations, f"invariant 4: reservations left open: {open_reservations}"


def reserved_scopes(engine: Engine) -> dict[str, int]:
    """scope → codes reserved under it (what a killed render left behind)."""
    return {
        str(scope): int(n)
        for scope, n in _rows(
            engine,
            "SELECT h.scope, count(DISTINCT c.id) FROM codes c JOIN held_codes h "
            f"ON h.token = c.reserved_token WHERE {_HELD} GROUP BY h.scope",
        )
    }


def mailing_codes(engine: Engine, mailing: str, pool: str) -> dict[str, str]:
    """customer → live initial code (slot 0) the mailing recorded from the pool."""
    rows = _rows(
        engine,
        "SELECT i.customer_id, c.code FROM issuances i JOIN codes c ON c.id = i.code_id "
        "WHERE i.mailing_id = :m AND i.pool_id = :p AND i.kind = 'initial' AND i.slot = 0 "
        "AND i.returned_at IS NULL",
        m=mailing,
        p=pool,
    )
    found = {str(customer): str(code) for customer, code in rows}
    assert len(found) == len(rows), f"invariant 2: {mailing}: a customer has two codes"
    return found


def status_counts(engine: Engine, pool: str) -> dict[str, int]:
    """state → codes: the stored status, or ``reserved`` for codes an open reservation holds."""
    return {
        str(state): int(n)
        for state, n in _rows(
            engine,
            f"SELECT CASE WHEN {_HELD} THEN 'reserved' ELSE c.status END AS state, count(*) "
            "FROM codes c WHERE c.pool_id = :p GROUP BY state",
            p=pool,
        )
    }


def count_issuances(engine: Engine, mailing: str) -> int:
    [(n,)] = _rows(engine, "SELECT count(*) FROM issuances WHERE mailing_id = :m", m=mailing)
    return int(n)


def stderr_is_clean_error(stderr: str) -> bool:
    """One ``Error:`` line and no Python traceback (SPEC 1, errors)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return (
        "Traceback" not in stderr
        and sum(line.startswith("Error:") for line in lines) == 1
        and lines[-1].startswith("Error:")
    )


def records_by_recipient(lines: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keyed = {str(r["recipient"]): r for r in lines}
    assert len(keyed) == len(lines), "a recipient appears more than once in the output"
    return keyed


def count_initial(engine: Engine) -> int:
    """Live initial issuances of single-use codes, in every mailing."""
    [(n,)] = _rows(
        engine,
        "SELECT count(*) FROM issuances WHERE exclusive AND kind = 'initial' "
        "AND returned_at IS NULL",
    )
    return int(n)


def check_message_returns(engine: Engine, *, manual_reason: str = "manual return") -> None:
    """Invariant 12: a message's codes go back at most once, and only when it was never delivered.

    Returns made by hand carry ``manual_reason``; every other return of an
    issuance stamped with a reference was made by a delivery state
    (``failed`` or ``bounced``) of that very message, and its delivery row
    counted each code once.
    """
    wrong_state = _rows(
        engine,
        "SELECT i.id, i.ref, d.status FROM issuances i LEFT JOIN deliveries d ON d.ref = i.ref "
        "WHERE i.returned_at IS NOT NULL AND i.ref IS NOT NULL AND i.return_reason <> :manual "
        "AND (d.status IS NULL OR d.status NOT IN ('failed', 'bounced'))",
        manual=manual_reason,
    )
    assert not wrong_state, (
        f"invariant 12: codes returned for a message not failed or bounced: {wrong_state[:5]}"
    )
    miscounted = _rows(
        engine,
        "SELECT d.ref, d.codes_returned, (SELECT count(*) FROM issuances i "
        "WHERE i.ref = d.ref AND i.kind = 'initial' AND i.exclusive "
        "AND i.returned_at IS NOT NULL AND i.return_reason <> :manual) AS n "
        "FROM deliveries d",
        manual=manual_reason,
    )
    off = [row for row in miscounted if row[1] != row[2]]
    assert not off, f"invariant 12: codes returned more or less than once: {off[:5]}"
    open_returns = _rows(
        engine,
        "SELECT ref, status, codes_returned FROM deliveries "
        "WHERE codes_returned > 0 AND status NOT IN ('failed', 'bounced')",
    )
    assert not open_returns, f"invariant 12: a delivered message gave codes back: {open_returns}"


def live_holds(
    engine: Engine, now: datetime, pool_like: str = "%"
) -> dict[str, tuple[str, datetime]]:
    """code → (order, end) of every hold that counts at ``now`` (invariant 13: one per code)."""
    query = select(Code.code, Code.hold_order, Code.hold_until).where(
        Code.hold_until > now, Code.pool_id.like(pool_like)
    )
    holds: dict[str, tuple[str, datetime]] = {}
    with read_transaction(engine) as conn:
        for code, order, until in conn.execute(query):
            assert code not in holds, f"invariant 13: code {code!r} held twice at once"
            assert order is not None and until is not None
            holds[code] = (order, until)
    return holds
