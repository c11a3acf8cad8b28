"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 22:08:34.442452
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailings",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("recipients_file", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailings")),
    )
    op.create_table(
        "pools",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("multi_use", sa.Boolean(), nullable=False),
        sa.Column("require_issued", sa.Boolean(), nullable=False),
        sa.Column("issued_valid_days", sa.Integer(), nullable=True),
        sa.Column("per_customer", sa.Integer(), nullable=True),
        sa.Column("low_stock", sa.Integer(), nullable=True),
        sa.Column("notify_url", sa.Text(), nullable=True),
        sa.Column("notify_email", sa.Text(), nullable=True),
        sa.Column("low_stock_notified_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("activated_at", sa.DateTime(), nullable=True),
        sa.Column("archived_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pools")),
    )
    op.create_table(
        "import_batches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pool_id", sa.String(length=100), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("voided_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["pools.id"],
            name=op.f("fk_import_batches_pool_id_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_batches")),
        sa.UniqueConstraint("id", "pool_id", name=op.f("uq_import_batches_id_pool_id")),
    )
    with op.batch_alter_table("import_batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_import_batches_pool_id"), ["pool_id"], unique=False)

    op.create_table(
        "mailing_runs",
        sa.Column("mailing_id", sa.String(length=200), nullable=False),
        sa.Column("shard", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("rendered", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("new_codes", sa.Integer(), nullable=False),
        sa.Column("reused_codes", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["mailing_id"],
            ["mailings.id"],
            name=op.f("fk_mailing_runs_mailing_id_mailings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mailing_id", "shard", name=op.f("pk_mailing_runs")),
    )
    op.create_table(
        "codes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pool_id", sa.String(length=100), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("issue_start", sa.DateTime(), nullable=True),
        sa.Column("issue_end", sa.DateTime(), nullable=True),
        sa.Column("available_from", sa.DateTime(), nullable=True),
        sa.Column("available_till", sa.DateTime(), nullable=True),
        sa.Column("issuable_until", sa.DateTime(), nullable=False),
        sa.Column("reserved_scope", sa.Text(), nullable=True),
        sa.Column("reserved_token", sa.String(length=64), nullable=True),
        sa.Column("reserved_until", sa.DateTime(), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(), nullable=True),
        sa.Column("redemptions", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id", "pool_id"],
            ["import_batches.id", "import_batches.pool_id"],
            name=op.f("fk_codes_batch_id_import_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_codes")),
        sa.UniqueConstraint("code", "pool_id", name=op.f("uq_codes_code_pool_id")),
    )
    with op.batch_alter_table("codes", schema=None) as batch_op:
        batch_op.create_index("ix_codes_batch", ["batch_id", "status"], unique=False)
        batch_op.create_index(
            "ix_codes_claim",
            ["pool_id", "issuable_until", "id"],
            unique=False,
            sqlite_where=sa.text("status = 'available'"),
            postgresql_where=sa.text("status = 'available'"),
        )
        batch_op.create_index(
            "ix_codes_reserved",
            ["reserved_until"],
            unique=False,
            sqlite_where=sa.text("status = 'reserved'"),
            postgresql_where=sa.text("status = 'reserved'"),
        )

    op.create_table(
        "issuances",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pool_id", sa.String(length=100), nullable=False),
        sa.Column("code_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("mailing_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("exclusive", sa.Boolean(), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["code_id"], ["codes.id"], name=op.f("fk_issuances_code_id_codes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["pools.id"], name=op.f("fk_issuances_pool_id_pools"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_issuances")),
    )
    with op.batch_alter_table("issuances", schema=None) as batch_op:
        batch_op.create_index("ix_issuances_code", ["code_id"], unique=False)
        batch_op.create_index(
            "ix_issuances_customer", ["customer_id", "pool_id", "issued_at"], unique=False
        )
        batch_op.create_index("ix_issuances_pool_time", ["pool_id", "issued_at"], unique=False)
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

    op.create_table(
        "redemptions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pool_id", sa.String(length=100), nullable=False),
        sa.Column("code_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("issued_to", sa.String(length=200), nullable=True),
        sa.Column("redeemed_by", sa.String(length=200), nullable=True),
        sa.Column("order_id", sa.String(length=200), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["code_id"], ["codes.id"], name=op.f("fk_redemptions_code_id_codes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"], ["pools.id"], name=op.f("fk_redemptions_pool_id_pools"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemptions")),
    )
    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.create_index("ix_redemptions_code", ["code_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_redemptions_redeemed_by"), ["redeemed_by"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_redemptions_redeemed_by"))
        batch_op.drop_index("ix_redemptions_code")

    op.drop_table("redemptions")
    with op.batch_alter_table("issuances", schema=None) as batch_op:
        batch_op.drop_index("uq_issuances_mailing_customer")
        batch_op.drop_index(
            "uq_issuances_exclusive_code",
            sqlite_where=sa.text("exclusive AND kind = 'initial'"),
            postgresql_where=sa.text("exclusive AND kind = 'initial'"),
        )
        batch_op.drop_index("ix_issuances_pool_time")
        batch_op.drop_index("ix_issuances_customer")
        batch_op.drop_index("ix_issuances_code")

    op.drop_table("issuances")
    with op.batch_alter_table("codes", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_codes_reserved",
            sqlite_where=sa.text("status = 'reserved'"),
            postgresql_where=sa.text("status = 'reserved'"),
        )
        batch_op.drop_index(
            "ix_codes_claim",
            sqlite_where=sa.text("status = 'available'"),
            postgresql_where=sa.text("status = 'available'"),
        )
        batch_op.drop_index("ix_codes_batch")

    op.drop_table("codes")
    op.drop_table("mailing_runs")
    with op.batch_alter_table("import_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_import_batches_pool_id"))

    op.drop_table("import_batches")
    op.drop_table("pools")
    op.drop_table("mailings")
