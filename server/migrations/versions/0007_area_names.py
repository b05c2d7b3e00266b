"""area names and device manifest cursors: the township and village names a county admin
sets, so pages show "name (code)" instead of a bare code; the manifest cursor each device
reported in its last hello, so pages show which devices still run an old form version

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "area_names",
        sa.Column("code", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=120), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_area_names")),
    )
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("manifest_cursor", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("manifest_cursor")
    op.drop_table("area_names")
