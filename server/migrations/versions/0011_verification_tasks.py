"""verification tasks: one per household carrying every reason found for it (department
cross-checks, round alerts), its working-day deadline and escalation, the outcome a village
team sent back, and the revision the devices' ``tasks`` download stream pages on (issue 17)

Revision ID: 0009_verification_tasks
Revises: 0008_record_filter_indexes
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_verification_tasks"
down_revision = "0008_record_filter_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "verification_tasks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("village_code", sa.String(length=12), nullable=False),
        sa.Column("county_code", sa.String(length=6), nullable=False),
        sa.Column("household_no", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reasons", json_type, nullable=False),
        sa.Column("reason_keys", json_type, nullable=False),
        sa.Column("origins", json_type, nullable=False),
        sa.Column("outcome", json_type, nullable=True),
        sa.Column("deadline", sa.Date(), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("worked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=120), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verification_tasks")),
    )
    op.create_index(
        "ix_verification_tasks_county_revision",
        "verification_tasks",
        ["county_code", "revision"],
        unique=False,
    )
    op.create_index(
        "ix_verification_tasks_household",
        "verification_tasks",
        ["village_code", "household_no"],
        unique=False,
    )
    op.create_index(
        "ix_verification_tasks_status_deadline",
        "verification_tasks",
        ["status", "deadline"],
        unique=False,
    )
    op.create_index(
        "uq_verification_tasks_open_household",
        "verification_tasks",
        ["village_code", "household_no"],
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("uq_verification_tasks_open_household", table_name="verification_tasks")
    op.drop_index("ix_verification_tasks_status_deadline", table_name="verification_tasks")
    op.drop_index("ix_verification_tasks_household", table_name="verification_tasks")
    op.drop_index("ix_verification_tasks_county_revision", table_name="verification_tasks")
    op.drop_table("verification_tasks")
