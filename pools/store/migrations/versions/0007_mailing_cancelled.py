"""mailing cancelled: when ``mailing cancel`` gave a mailing's codes back

``mailings.cancelled_at`` records the cancellation, so a mailing's status
says "cancelled" rather than the "finished" of its last render; a later run
of the mailing clears it (the mailing is being rendered again). Mailings
cancelled before the upgrade keep a status from their runs: which of their
returns was a cancellation is not recorded.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mailings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancelled_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailings", schema=None) as batch_op:
        batch_op.drop_column("cancelled_at")
