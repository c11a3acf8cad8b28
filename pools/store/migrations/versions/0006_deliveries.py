"""deliveries: message references, delivery states and delivery events

Every issuance a rendered message records carries the message's delivery
reference (``issuances.ref``, indexed: an event names its message by it
alone). ``deliveries`` holds each message's state as the relay and the mail
services report it; ``delivery_events`` the events already applied, so a
repeated event changes nothing; ``webhook_tokens`` the one-time tokens of
signed webhooks seen recently (replays). ``store_secrets`` gets the key the
references are made with: 32 random bytes drawn here, once per store, so a
reference cannot be guessed from a mailing and a recipient id.

Issuances recorded before the upgrade have no reference: an event cannot
name their messages, and ``mailing return`` still gives their codes back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 12:00:00.000000
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

REF_KEY = "delivery_ref_key"


def upgrade() -> None:
    secrets = op.create_table(
        "store_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_store_secrets")),
    )
    op.bulk_insert(secrets, [{"name": REF_KEY, "value": os.urandom(32).hex()}])
    # A plain ALTER rather than a batch rebuild of the issuance log: a new
    # nullable column needs no copy of the table on either database.
    op.add_column("issuances", sa.Column("ref", sa.String(length=64), nullable=True))
    op.create_index("ix_issuances_ref", "issuances", ["ref"])
    op.create_table(
        "deliveries",
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("mailing_id", sa.String(length=200), nullable=False),
        sa.Column("recipient_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("codes_returned", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("ref", name=op.f("pk_deliveries")),
    )
    op.create_index("ix_deliveries_mailing_status", "deliveries", ["mailing_id", "status"])
    op.create_table(
        "delivery_events",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "event_id", name=op.f("pk_delivery_events")),
    )
    op.create_index("ix_delivery_events_received_at", "delivery_events", ["received_at"])
    op.create_table(
        "webhook_tokens",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("token", sa.String(length=200), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "token", name=op.f("pk_webhook_tokens")),
    )
    op.create_index("ix_webhook_tokens_seen_at", "webhook_tokens", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_tokens_seen_at", table_name="webhook_tokens")
    op.drop_table("webhook_tokens")
    op.drop_index("ix_delivery_events_received_at", table_name="delivery_events")
    op.drop_table("delivery_events")
    op.drop_index("ix_deliveries_mailing_status", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index("ix_issuances_ref", table_name="issuances")
    op.execute("ALTER TABLE issuances DROP COLUMN ref")
    op.drop_table("store_secrets")
