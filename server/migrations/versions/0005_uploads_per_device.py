"""uploads per device: an upload is (content address, device), so a device that knows another's
hash can neither see, spoil, reset nor squat its upload; each completed row grants its own
device's scope the view of the (shared, content-addressed) stored file

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE attachments SET device_id = '' WHERE device_id IS NULL")
    with op.batch_alter_table("attachments", recreate="always") as batch:
        batch.drop_constraint("pk_attachments", type_="primary")
        batch.alter_column(
            "device_id", existing_type=sa.String(length=36), nullable=False, server_default=""
        )
        batch.create_primary_key("pk_attachments", ["sha256", "device_id"])


def downgrade() -> None:
    # Keep one row per address (the first completed, else any): the old key cannot hold more.
    op.execute(
        "DELETE FROM attachments WHERE EXISTS (SELECT 1 FROM attachments AS a "
        "WHERE a.sha256 = attachments.sha256 AND a.device_id < attachments.device_id)"
    )
    with op.batch_alter_table("attachments", recreate="always") as batch:
        batch.drop_constraint("pk_attachments", type_="primary")
        batch.alter_column(
            "device_id", existing_type=sa.String(length=36), nullable=True, server_default=None
        )
        batch.create_primary_key("pk_attachments", ["sha256"])
