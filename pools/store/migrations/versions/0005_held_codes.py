"""held codes: a reservation writes each code row once

A code reserved by a render is now stored as ``issued`` under its
reservation's token, and the open reservation is a row of ``held_codes``
(token, scope, pool, expiry, the code ids). Settling a chunk then inserts its
issuances without writing the code rows a second time. ``reserved_scope`` and
``reserved_until`` move to ``held_codes``, with the partial index on reserved
codes; ``reserved_token`` stays on the code.

Codes reserved before the upgrade keep their reservation: each
(token, scope, pool, expiry) group of them becomes one ``held_codes`` row, so
the render holding them settles them as before, and the next run of the
scope or the expiry reclaims them. A reserved code without a token could
never be settled and goes back to ``available``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 11:00:00.000000
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _is_postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    op.create_table(
        "held_codes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("pool_id", sa.String(length=100), nullable=False),
        sa.Column("until", sa.DateTime(), nullable=False),
        sa.Column("code_ids", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_codes")),
    )
    op.create_index("ix_held_codes_token", "held_codes", ["token"])
    op.create_index("ix_held_codes_scope", "held_codes", ["scope"])
    op.create_index("ix_held_codes_until", "held_codes", ["until"])

    op.execute(
        "UPDATE codes SET status = 'available', reserved_scope = NULL, reserved_until = NULL "
        "WHERE status = 'reserved' AND reserved_token IS NULL"
    )
    id_list = "json_agg(id ORDER BY id)::text" if _is_postgres() else "json_group_array(id)"
    # Stored times are naive UTC; CURRENT_TIMESTAMP would be the session's zone.
    now = datetime.now(UTC).replace(tzinfo=None)
    op.execute(
        sa.text(
            "INSERT INTO held_codes (token, scope, pool_id, until, code_ids) "
            f"SELECT reserved_token, coalesce(reserved_scope, ''), pool_id, "
            f"coalesce(reserved_until, :now), {id_list} "
            "FROM codes WHERE status = 'reserved' "
            "GROUP BY reserved_token, reserved_scope, pool_id, reserved_until"
        ).bindparams(now=now)
    )
    op.execute("UPDATE codes SET status = 'issued' WHERE status = 'reserved'")
    op.drop_index("ix_codes_reserved", table_name="codes")
    # A plain ALTER (SQLite >= 3.35 has it) rather than a batch rebuild of the
    # whole codes table: neither column is indexed or constrained any more.
    op.execute("ALTER TABLE codes DROP COLUMN reserved_scope")
    op.execute("ALTER TABLE codes DROP COLUMN reserved_until")


def downgrade() -> None:
    op.execute("ALTER TABLE codes ADD COLUMN reserved_scope TEXT")
    op.execute(
        "ALTER TABLE codes ADD COLUMN reserved_until "
        + ("TIMESTAMP WITHOUT TIME ZONE" if _is_postgres() else "DATETIME")
    )
    listed = (
        "codes.id IN (SELECT e::bigint FROM json_array_elements_text(h.code_ids::json) AS e)"
        if _is_postgres()
        else "codes.id IN (SELECT value FROM json_each(h.code_ids))"
    )
    holder = f"FROM held_codes h WHERE h.token = codes.reserved_token AND {listed}"
    op.execute(
        f"UPDATE codes SET status = 'reserved', "
        f"reserved_scope = (SELECT min(h.scope) {holder}), "
        f"reserved_until = (SELECT min(h.until) {holder}) "
        f"WHERE status = 'issued' AND EXISTS (SELECT 1 {holder})"
    )
    # Before 0005 a code carried a token exactly while it was reserved.
    op.execute("UPDATE codes SET reserved_token = NULL WHERE status <> 'reserved'")
    op.create_index(
        "ix_codes_reserved",
        "codes",
        ["reserved_until"],
        sqlite_where=sa.text("status = 'reserved'"),
        postgresql_where=sa.text("status = 'reserved'"),
    )
    op.drop_index("ix_held_codes_until", table_name="held_codes")
    op.drop_index("ix_held_codes_scope", table_name="held_codes")
    op.drop_index("ix_held_codes_token", table_name="held_codes")
    op.drop_table("held_codes")
