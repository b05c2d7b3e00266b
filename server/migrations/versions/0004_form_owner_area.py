"""form owner area: a form belongs to the area of the admin who created it ('' = the whole
server, as built-ins do); only admins of that area manage its versions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forms") as batch:
        batch.add_column(
            sa.Column("owner_area", sa.String(length=12), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("forms") as batch:
        batch.drop_column("owner_area")
