"""redemption lifecycle: replays, roll-backs, campaign attribution, returned codes

Issuances gain ``returned_at``/``return_reason`` (a message never delivered
gives its code back); redemptions gain ``rolled_back_at`` (an order cancelled),
``mailing_id`` (the campaign that gave the code) and ``exclusive`` (the
pool's mode, so an index can keep a single-use code to one live redemption).
The unique indexes of issuances now cover live rows only.

Existing redemptions are attributed to the mailing that first gave the code
to ``issued_to``. An order that redeemed the same multi-use code more than
once was counted each time before; the new rule counts it once, so the later
duplicates are marked rolled back (at migration time) and the codes' counts
recomputed from the live redemptions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 08:20:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_LIVE_EXCLUSIVE_INITIAL = "exclusive AND kind = 'initial' AND returned_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("issuances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("returned_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("return_reason", sa.Text(), nullable=True))
        batch_op.drop_index("uq_issuances_exclusive_code")
        batch_op.drop_index("uq_issuances_mailing_customer")
    with op.batch_alter_table("issuances", schema=None) as batch_op:
        batch_op.create_index(
            "uq_issuances_exclusive_code",
            ["code_id"],
            unique=True,
            sqlite_where=sa.text(_LIVE_EXCLUSIVE_INITIAL),
            postgresql_where=sa.text(_LIVE_EXCLUSIVE_INITIAL),
        )
        batch_op.create_index(
            "uq_issuances_mailing_customer",
            ["mailing_id", "pool_id", "customer_id", "kind", "slot"],
            unique=True,
            sqlite_where=sa.text("returned_at IS NULL"),
            postgresql_where=sa.text("returned_at IS NULL"),
        )
        batch_op.create_index(
            "ix_issuances_returned",
            ["mailing_id"],
            unique=False,
            sqlite_where=sa.text("returned_at IS NOT NULL"),
            postgresql_where=sa.text("returned_at IS NOT NULL"),
        )

    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mailing_id", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("exclusive", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("rolled_back_at", sa.DateTime(), nullable=True))
    op.execute(
        "UPDATE redemptions SET exclusive = "
        "(SELECT NOT p.multi_use FROM pools p WHERE p.id = redemptions.pool_id)"
    )
    op.execute(
        "UPDATE redemptions SET mailing_id = ("
        "SELECT i.mailing_id FROM issuances i WHERE i.code_id = redemptions.code_id "
        "AND i.customer_id = redemptions.issued_to AND i.kind = 'initial' "
        "ORDER BY i.issued_at, i.id LIMIT 1) WHERE issued_to IS NOT NULL"
    )
    op.get_bind().execute(
        sa.text(
            "UPDATE redemptions SET rolled_back_at = :now WHERE order_id IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM redemptions r2 WHERE r2.code_id = redemptions.code_id "
            "AND r2.order_id = redemptions.order_id AND r2.id < redemptions.id)"
        ).bindparams(sa.bindparam("now", type_=sa.DateTime())),
        {"now": datetime.now(UTC).replace(tzinfo=None)},
    )
    op.execute(
        "UPDATE codes SET redemptions = (SELECT count(*) FROM redemptions r "
        "WHERE r.code_id = codes.id AND r.rolled_back_at IS NULL) "
        "WHERE id IN (SELECT code_id FROM redemptions WHERE rolled_back_at IS NOT NULL)"
    )
    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.alter_column("exclusive", existing_type=sa.Boolean(), nullable=False)
        batch_op.create_index("ix_redemptions_mailing", ["mailing_id"], unique=False)
        batch_op.create_index(
            "uq_redemptions_single_use",
            ["code_id"],
            unique=True,
            sqlite_where=sa.text("exclusive AND rolled_back_at IS NULL"),
            postgresql_where=sa.text("exclusive AND rolled_back_at IS NULL"),
        )
        batch_op.create_index(
            "uq_redemptions_order",
            ["code_id", "order_id"],
            unique=True,
            sqlite_where=sa.text("order_id IS NOT NULL AND rolled_back_at IS NULL"),
            postgresql_where=sa.text("order_id IS NOT NULL AND rolled_back_at IS NULL"),
        )


def downgrade() -> None:
    # Undone events would count again under the old schema: drop them first.
    op.execute("DELETE FROM redemptions WHERE rolled_back_at IS NOT NULL")
    op.execute("DELETE FROM issuances WHERE returned_at IS NOT NULL")
    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.drop_index("ix_redemptions_mailing")
        batch_op.drop_index("uq_redemptions_order")
        batch_op.drop_index("uq_redemptions_single_use")
        batch_op.drop_column("rolled_back_at")
        batch_op.drop_column("exclusive")
        batch_op.drop_column("mailing_id")
    with op.batch_alter_table("issuances", schema=None) as batch_op:
        batch_op.drop_index("ix_issuances_returned")
        batch_op.drop_index("uq_issuances_mailing_customer")
        batch_op.drop_index("uq_issuances_exclusive_code")
    with op.batch_alter_table("issuances", schema=None) as batch_op:
        batch_op.drop_column("return_reason")
        batch_op.drop_column("returned_at")
        batch_op.create_index(
            "uq_issuances_exclusive_code",
            ["code_id"],
            unique=True,
            sqlite_where=sa.text("exclusive AND kind = 'initial'"),
            postgresql_where=sa.text("exclusive AND kind = 'initial'"),
        )
        batch_op.create_index(
            "uq_issuances_mailing_customer",
            ["mailing_id", "pool_id", "customer_id", "kind", "slot"],
            unique=True,
        )
