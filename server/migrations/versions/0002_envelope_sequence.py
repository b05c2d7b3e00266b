"""device op marks: the highest envelope sequence opened per device (replay refusal)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device_op_marks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("envelope_seq", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("device_op_marks", schema=None) as batch_op:
        batch_op.drop_column("envelope_seq")
