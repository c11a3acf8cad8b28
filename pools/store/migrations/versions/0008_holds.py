"""checkout holds and once-per-customer codes

Codes gain ``hold_order`` and ``hold_until``: the order a checkout holds the
code for, and until when. The hold lives on the code's own row, so a code
carries one hold at most and taking one is a conditional update of that row.
Pools gain ``once_per_customer`` (multi-use pools whose shared code each
customer may redeem once), and redemptions the same flag, copied so a
partial unique index can keep a customer to one live redemption of such a
code.

Every new column is nullable or has a constant default, so neither database
copies a table: existing codes are held by nobody, existing pools and
redemptions are not once-per-customer.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_LIVE_ONCE = "once_per_customer AND rolled_back_at IS NULL"


def upgrade() -> None:
    # Plain ALTERs rather than batch rebuilds of the codes and redemption logs.
    op.add_column("codes", sa.Column("hold_order", sa.String(length=200), nullable=True))
    op.add_column("codes", sa.Column("hold_until", sa.DateTime(), nullable=True))
    for table in ("pools", "redemptions"):
        op.add_column(
            table,
            sa.Column("once_per_customer", sa.Boolean(), nullable=False, server_default=sa.false()),
        )
    op.create_index(
        "uq_redemptions_once_per_customer",
        "redemptions",
        ["code_id", "redeemed_by"],
        unique=True,
        sqlite_where=sa.text(_LIVE_ONCE),
        postgresql_where=sa.text(_LIVE_ONCE),
    )


def downgrade() -> None:
    op.drop_index("uq_redemptions_once_per_customer", table_name="redemptions")
    for table, column in (
        ("redemptions", "once_per_customer"),
        ("pools", "once_per_customer"),
        ("codes", "hold_until"),
        ("codes", "hold_order"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
