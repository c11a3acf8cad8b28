"""The shipped migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, inspect, text

from promomail.pools.store.db import (
    SCHEMA_HEAD,
    StoreConfig,
    current_revision,
    head_revision,
    open_engine,
    upgrade,
)
from promomail.pools.store.models import Base
from tests.support.paths import REPO_ROOT
from tests.support.racing import run_together
from tests.support.store_helpers import make_pool

ROOT = REPO_ROOT


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_the_comparison_sees_a_difference(engine: Engine) -> None:
    """Guards the test above against comparing nothing."""
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["codes"].append_column(Column("colour", Integer))
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), changed)
    assert [d[0] for d in differences] == ["add_column"]


def test_migrated_schema_has_the_partial_indexes(engine: Engine) -> None:
    # compare_metadata does not look at index predicates: check them here.
    indexes = {i["name"]: i for i in inspect(engine).get_indexes("codes")}
    indexes.update({i["name"]: i for i in inspect(engine).get_indexes("issuances")})
    assert indexes["ix_codes_claim"]["column_names"] == ["pool_id", "issuable_until", "id"]
    assert indexes["uq_issuances_exclusive_code"]["unique"]
    predicates = {
        name: _predicate(engine, name) for name in ("ix_codes_claim", "uq_issuances_exclusive_code")
    }
    assert "status = 'available'" in predicates["ix_codes_claim"]
    # Reservations live in held_codes, not in an index over the codes.
    assert "ix_codes_reserved" not in indexes
    assert "exclusive" in predicates["uq_issuances_exclusive_code"]
    assert "kind = 'initial'" in predicates["uq_issuances_exclusive_code"]


def _predicate(engine: Engine, index: str) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = conn.execute(
                text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"),
                {"n": index},
            ).scalar_one()
        else:
            sql = conn.execute(
                text(
                    "SELECT indexdef FROM pg_indexes "
                    "WHERE schemaname = current_schema() AND indexname = :n"
                ),
                {"n": index},
            ).scalar_one()
    # PostgreSQL prints predicates with casts and brackets: compare their core.
    return str(sql).replace("::text", "").replace("(", "").replace(")", "")


def test_the_schema_head_constant_is_alembics_head() -> None:
    # Commands skip importing Alembic when the store is at SCHEMA_HEAD: a new
    # migration without a new SCHEMA_HEAD would never be applied.
    assert head_revision() == SCHEMA_HEAD


def test_a_store_at_the_head_is_opened_without_importing_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_engine(StoreConfig(url)).dispose()
    script = (
        "import sys; from promomail.pools.store.db import StoreConfig, open_engine;"
        f"open_engine(StoreConfig({url!r})).dispose();"
        "print('alembic' in sys.modules)"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert found.stdout.strip() == "False"


def test_upgrade_is_idempotent(db_url: str) -> None:
    engine = open_engine(StoreConfig(db_url), migrate=False)
    try:
        assert current_revision(engine) is None
        assert upgrade(engine) == head_revision()
        assert current_revision(engine) == head_revision()
        tables = sorted(inspect(engine).get_table_names())
        assert upgrade(engine) == head_revision()
        assert upgrade(engine) == head_revision()
        assert sorted(inspect(engine).get_table_names()) == tables
        assert {"pools", "codes", "issuances", "import_batches", "alembic_version"} <= set(tables)
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [v[0] for v in versions] == [head_revision()]
    finally:
        engine.dispose()


def test_open_engine_on_an_up_to_date_store_keeps_the_data(db_url: str) -> None:
    first = open_engine(StoreConfig(db_url))
    try:
        make_pool(first, "spring", ["A1", "A2"])
    finally:
        first.dispose()
    again = open_engine(StoreConfig(db_url))
    try:
        with again.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM codes")).scalar_one() == 2
    finally:
        again.dispose()


def _migrate_when_released(barrier: Any, url: str) -> str | None:
    from promomail.pools.store.db import StoreConfig, create_store_engine, current_revision, upgrade

    engine = create_store_engine(StoreConfig(url))
    try:
        with engine.connect() as conn:  # connected before the start
            conn.execute(text("SELECT 1"))
        barrier.wait()
        upgrade(engine)
        return current_revision(engine)
    finally:
        engine.dispose()


def test_concurrent_first_use_migrates_once(db_url: str) -> None:
    revisions = run_together(_migrate_when_released, [(db_url,), (db_url,)])
    assert revisions == [head_revision(), head_revision()]
    engine = open_engine(StoreConfig(db_url), migrate=False)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            assert compare_metadata(context, Base.metadata) == []
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()


def test_redemption_lifecycle_migration_keeps_and_attributes_old_data(db_url: str) -> None:
    """0003 on a store with data: attribution filled in, double-counted orders undone."""
    from alembic import command

    from promomail.pools.store.db import _alembic_config, write_transaction

    engine = open_engine(StoreConfig(db_url), migrate=False)
    try:
        with write_transaction(engine) as conn:
            command.upgrade(_alembic_config(conn), "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO pools (id, name, status, multi_use, require_issued, created_at) "
                    "VALUES ('one', 'one', 'active', false, false, '2026-01-01'), "
                    "('many', 'many', 'active', true, false, '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO import_batches (id, pool_id, source, format, accepted, "
                    "duplicates, rejected, created_at) VALUES "
                    "(1, 'one', 'a', 'txt', 1, 0, 0, '2026-01-01'), "
                    "(2, 'many', 'b', 'txt', 1, 0, 0, '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO codes (id, pool_id, code, batch_id, status, issuable_until, "
                    "redemptions) VALUES (1, 'one', 'ONE', 1, 'issued', '9999-12-31', 1), "
                    "(2, 'many', 'MANY', 2, 'available', '9999-12-31', 3)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO issuances (pool_id, code_id, customer_id, mailing_id, kind, "
                    "slot, exclusive, issued_at) VALUES "
                    "('one', 1, 'ann', 'm1', 'initial', 0, true, '2026-01-02')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO redemptions (pool_id, code_id, issued_to, redeemed_by, "
                    "order_id, redeemed_at) VALUES "
                    "('one', 1, 'ann', 'ann', 'o1', '2026-01-03'), "
                    "('many', 2, NULL, 'x', 'o2', '2026-01-03'), "
                    "('many', 2, NULL, 'x', 'o2', '2026-01-04'), "
                    "('many', 2, NULL, 'y', 'o3', '2026-01-05')"
                )
            )
        upgrade(engine)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT order_id, mailing_id, exclusive, rolled_back_at IS NOT NULL "
                    "FROM redemptions ORDER BY id"
                )
            ).all()
            counts = conn.execute(text("SELECT code, redemptions FROM codes ORDER BY id")).all()
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert [(r[0], r[1], bool(r[2]), bool(r[3])) for r in rows] == [
            ("o1", "m1", True, False),
            ("o2", None, False, False),
            ("o2", None, False, True),
            ("o3", None, False, False),
        ]
        assert [tuple(c) for c in counts] == [("ONE", 1), ("MANY", 2)]
    finally:
        engine.dispose()


def _old_pool(conn: Connection, pool_id: str, codes: list[str]) -> None:
    """An active single-use pool with ``codes``, in the columns every revision has."""
    conn.execute(
        text(
            "INSERT INTO pools (id, name, description, status, multi_use, require_issued, "
            "created_at) VALUES (:p, :p, 'old', 'active', false, false, '2026-01-01')"
        ),
        {"p": pool_id},
    )
    batch = conn.execute(
        text(
            "INSERT INTO import_batches (pool_id, source, format, accepted, duplicates, "
            "rejected, created_at) VALUES (:p, 'old.txt', 'txt', :n, 0, 0, '2026-01-01') "
            "RETURNING id"
        ),
        {"p": pool_id, "n": len(codes)},
    ).scalar_one()
    for code in codes:
        conn.execute(
            text(
                "INSERT INTO codes (pool_id, code, batch_id, status, issuable_until, "
                "redemptions) VALUES (:p, :c, :b, 'available', '9999-12-31', 0)"
            ),
            {"p": pool_id, "c": code, "b": batch},
        )


def _store_at(db_url: str, revision: str) -> Engine:
    from alembic import command

    from promomail.pools.store.db import _alembic_config, write_transaction

    engine = open_engine(StoreConfig(db_url), migrate=False)
    with write_transaction(engine) as conn:
        command.upgrade(_alembic_config(conn), revision)
    return engine


def test_held_codes_migration_keeps_open_reservations(db_url: str) -> None:
    """0005 on a store with reserved codes: the render holding them can still settle."""
    from promomail.pools.admin.lifecycle import show_pool
    from promomail.pools.issuing.claiming import Reservation, reclaim_scope, settle
    from promomail.pools.store.dialect_sql import PromoCode

    engine = _store_at(db_url, "0004")
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO pools (id, name, status, multi_use, require_issued, created_at) "
                    "VALUES ('one', 'one', 'active', false, false, '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO import_batches (id, pool_id, source, format, accepted, "
                    "duplicates, rejected, created_at) VALUES "
                    "(1, 'one', 'a', 'txt', 6, 0, 0, '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO codes (id, pool_id, code, batch_id, status, issuable_until, "
                    "redemptions, reserved_token, reserved_scope, reserved_until) VALUES "
                    "(1, 'one', 'R1', 1, 'reserved', '9999-12-31', 0, 'tok', 'm1|all', "
                    "'2999-01-01'), "
                    "(2, 'one', 'R2', 1, 'reserved', '9999-12-31', 0, 'tok', 'm1|all', "
                    "'2999-01-01'), "
                    "(3, 'one', 'S1', 1, 'reserved', '9999-12-31', 0, 'old', 'm2|all', "
                    "'2999-01-01'), "
                    "(4, 'one', 'I1', 1, 'issued', '9999-12-31', 0, NULL, NULL, NULL), "
                    "(5, 'one', 'A1', 1, 'available', '9999-12-31', 0, NULL, NULL, NULL), "
                    "(6, 'one', 'X1', 1, 'reserved', '9999-12-31', 0, NULL, 'm3|all', "
                    "'2999-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO issuances (pool_id, code_id, customer_id, mailing_id, kind, "
                    "slot, exclusive, issued_at) VALUES "
                    "('one', 4, 'ann', 'm0', 'initial', 0, true, '2026-01-02')"
                )
            )
        upgrade(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            held = conn.execute(
                text("SELECT token, scope, pool_id, code_ids FROM held_codes ORDER BY token")
            ).all()
        assert [(r[0], r[1], r[2], sorted(json.loads(r[3]))) for r in held] == [
            ("old", "m2|all", "one", [3]),
            ("tok", "m1|all", "one", [1, 2]),
        ]
        # The reserved code without a token could never be settled: it is back.
        counts = show_pool(engine, "one").counts
        assert (counts.total, counts.reserved, counts.issued, counts.available) == (6, 3, 1, 2)
        until = datetime(9999, 12, 31)
        holding = Reservation(
            "one", "m1|all", "tok", [PromoCode(until, 1, "R1"), PromoCode(until, 2, "R2")]
        )
        settle(engine, "m1", [holding], {"one": [holding.codes[0].to("bob")]})
        assert reclaim_scope(engine, "m2|all") == 1
        counts = show_pool(engine, "one").counts
        assert (counts.total, counts.reserved, counts.issued, counts.available) == (6, 0, 2, 4)
    finally:
        engine.dispose()


def test_held_codes_migration_goes_back_down(db_url: str) -> None:
    """Downgrading 0005 turns open reservations back into reserved code rows."""
    from alembic import command

    from promomail.pools.issuing.claiming import reserve, settle
    from promomail.pools.store.db import _alembic_config, write_transaction

    engine = open_engine(StoreConfig(db_url))
    try:
        make_pool(engine, "one", ["A1", "A2", "A3"])
        # A1 settled (it keeps its reservation's token until the downgrade), A2 held.
        settled = reserve(engine, "one", 1, scope="m0|all")
        settle(engine, "m0", [settled], {"one": [settled.codes[0].to("ann")]})
        reserve(engine, "one", 1, scope="m1|all")
        with write_transaction(engine) as conn:
            command.downgrade(_alembic_config(conn), "0004")
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT code, status, reserved_token IS NOT NULL, reserved_scope, "
                    "reserved_until IS NOT NULL FROM codes ORDER BY id"
                )
            ).all()
        assert [tuple(r) for r in rows] == [
            ("A1", "issued", False, None, False),
            ("A2", "reserved", True, "m1|all", True),
            ("A3", "available", False, None, False),
        ]
        upgrade(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_live_rows_only_indexes_have_their_predicates(engine: Engine) -> None:
    expected = {
        "uq_issuances_exclusive_code": "returned_at IS NULL",
        "uq_issuances_mailing_customer": "returned_at IS NULL",
        "ix_issuances_returned": "returned_at IS NOT NULL",
        "uq_redemptions_single_use": "rolled_back_at IS NULL",
        "uq_redemptions_order": "rolled_back_at IS NULL",
        "uq_redemptions_once_per_customer": "once_per_customer AND rolled_back_at IS NULL",
    }
    for index, predicate in expected.items():
        assert predicate in _predicate(engine, index), index
    indexes = {i["name"]: i for i in inspect(engine).get_indexes("redemptions")}
    assert indexes["uq_redemptions_single_use"]["unique"]
    assert indexes["uq_redemptions_order"]["column_names"] == ["code_id", "order_id"]


def test_deliveries_migration_keeps_the_issuance_log_and_draws_a_key_per_store(
    db_url: str, tmp_path: Path
) -> None:
    """0006 on a store with issuances: they stay, without a reference; each store gets its key."""
    from promomail.pools.after_sending.delivery_events import apply_event
    from promomail.pools.after_sending.references import delivery_ref_key
    from promomail.pools.after_sending.returns import return_codes

    engine = _store_at(db_url, "0005")
    try:
        # Written as a 0005 store records them (the library now writes more columns).
        with engine.begin() as conn:
            _old_pool(conn, "one", ["A1", "A2", "A3"])
            conn.execute(text("UPDATE codes SET status = 'issued' WHERE code IN ('A1', 'A2')"))
            conn.execute(
                text(
                    "INSERT INTO issuances (pool_id, code_id, customer_id, mailing_id, kind, "
                    "slot, exclusive, issued_at) SELECT 'one', id, "
                    "CASE code WHEN 'A1' THEN 'ann' ELSE 'bob' END, 'm0', 'initial', 0, true, "
                    "'2026-01-02' FROM codes WHERE code IN ('A1', 'A2')"
                )
            )
        upgrade(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            rows = conn.execute(
                text("SELECT customer_id, ref FROM issuances ORDER BY customer_id")
            ).all()
            key = delivery_ref_key(conn)
        assert [tuple(r) for r in rows] == [("ann", None), ("bob", None)]
        assert len(key) == 32
        # No event can name those messages; a return by hand still gives their codes back.
        outcome = apply_event(
            engine,
            provider="p",
            event_id="e",
            ref="x" * 24,
            kind="bounce",
            permanent=True,
            at=None,
            detail="",
        )
        assert outcome == "unmatched"
        assert return_codes(engine, "m0", ["ann"], reason="bounce").returned == 1
        other = open_engine(StoreConfig(f"sqlite:///{tmp_path / 'other.db'}"))
        try:
            with other.connect() as conn:
                assert delivery_ref_key(conn) != key
        finally:
            other.dispose()
    finally:
        engine.dispose()


def test_deliveries_migration_goes_back_down(db_url: str) -> None:
    from alembic import command

    from promomail.pools.store.db import _alembic_config, write_transaction

    engine = open_engine(StoreConfig(db_url))
    try:
        with write_transaction(engine) as conn:
            command.downgrade(_alembic_config(conn), "0005")
        tables = set(inspect(engine).get_table_names())
        assert not tables & {"deliveries", "delivery_events", "webhook_tokens", "store_secrets"}
        assert "ref" not in {c["name"] for c in inspect(engine).get_columns("issuances")}
        upgrade(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_holds_migration_keeps_codes_pools_and_redemptions(db_url: str) -> None:
    """0008 on a store with data: nothing held, nothing once per customer, all else as it was."""
    from promomail.pools.after_sending.holds import hold_code
    from promomail.pools.after_sending.redemption import redeem

    engine = _store_at(db_url, "0007")
    try:
        with engine.begin() as conn:
            _old_pool(conn, "one", ["A1", "A2"])
            conn.execute(
                text(
                    "INSERT INTO redemptions (pool_id, code_id, redeemed_by, order_id, "
                    "redeemed_at, exclusive) SELECT 'one', id, 'ann', 'o1', '2026-01-03', true "
                    "FROM codes WHERE code = 'A1'"
                )
            )
            conn.execute(text("UPDATE codes SET redemptions = 1 WHERE code = 'A1'"))
        upgrade(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            codes = conn.execute(
                text("SELECT code, redemptions, hold_order, hold_until FROM codes ORDER BY code")
            ).all()
            pools = conn.execute(text("SELECT id, once_per_customer FROM pools")).all()
            redemptions = conn.execute(
                text("SELECT order_id, once_per_customer FROM redemptions")
            ).all()
        assert [tuple(c) for c in codes] == [("A1", 1, None, None), ("A2", 0, None, None)]
        assert [(p[0], bool(p[1])) for p in pools] == [("one", False)]
        assert [(r[0], bool(r[1])) for r in redemptions] == [("o1", False)]
        # The upgraded store holds and redeems as a new one does.
        assert hold_code(engine, "A1", order="o2").reason == "already redeemed"
        assert hold_code(engine, "A2", order="o2").ok
        assert "held by another order" in str(redeem(engine, "A2", order="o3").reason)
        assert redeem(engine, "A2", order="o2").ok
    finally:
        engine.dispose()


def test_holds_migration_goes_back_down(db_url: str) -> None:
    from alembic import command

    from promomail.pools.store.db import _alembic_config, write_transaction

    engine = open_engine(StoreConfig(db_url))
    try:
        with write_transaction(engine) as conn:
            command.downgrade(_alembic_config(conn), "0007")
        columns = {
            table: {c["name"] for c in inspect(engine).get_columns(table)}
            for table in ("codes", "pools", "redemptions")
        }
        assert not columns["codes"] & {"hold_order", "hold_until"}
        assert "once_per_customer" not in columns["pools"] | columns["redemptions"]
        upgrade(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()
