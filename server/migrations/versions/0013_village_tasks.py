"""village-level verification tasks: a person on a department list whom no household of the
roster has, in a village the list names, is a task of that village with no household — so
``household_no`` may be null and ``subject`` names the person (one open task per person and
village, as one open task per household)

Revision ID: 0011_village_tasks
Revises: 0010_round_alerts
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_village_tasks"
# The coordinator re-chains this at merge (issue 17 adds several migrations side by side).
down_revision = "0010_round_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("verification_tasks") as batch:
        batch.alter_column("household_no", existing_type=sa.String(length=64), nullable=True)
        batch.add_column(sa.Column("subject", sa.String(length=64), nullable=True))
    op.create_index(
        "uq_verification_tasks_open_subject",
        "verification_tasks",
        ["village_code", "subject"],
        unique=True,
        sqlite_where=sa.text("status = 'open' AND subject IS NOT NULL"),
        postgresql_where=sa.text("status = 'open' AND subject IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_verification_tasks_open_subject", table_name="verification_tasks")
    # Village-level tasks have no household to keep: they go with the column.
    op.execute("DELETE FROM verification_tasks WHERE household_no IS NULL")
    with op.batch_alter_table("verification_tasks") as batch:
        batch.drop_column("subject")
        batch.alter_column("household_no", existing_type=sa.String(length=64), nullable=False)
