"""round-over-round alerts: each run of a round (round, area, the configuration it used, its
counts) and what it found per household, kept side by side so a run under a changed threshold
never rewrites an earlier run's findings

Revision ID: 0010_round_alerts
Revises: 0009_verification_tasks
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010_round_alerts"
# The coordinator re-chains this at merge (issue 17 adds several migrations side by side).
down_revision = "0009_verification_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "round_alert_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("round", sa.String(length=40), nullable=False),
        sa.Column("area_prefix", sa.String(length=12), nullable=False),
        sa.Column("config_key", sa.String(length=16), nullable=False),
        sa.Column("findings_key", sa.String(length=64), nullable=False),
        sa.Column("config", json_type, nullable=False),
        sa.Column("counts", json_type, nullable=False),
        sa.Column("households", sa.Integer(), nullable=False),
        sa.Column("signals", sa.Integer(), nullable=False),
        sa.Column("run_by", sa.String(length=120), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_round_alert_runs")),
        sa.UniqueConstraint(
            "round",
            "area_prefix",
            "findings_key",
            name=op.f("uq_round_alert_runs_round_area_prefix_findings_key"),
        ),
    )
    op.create_index(
        "ix_round_alert_runs_round_started", "round_alert_runs", ["round", "started_at"]
    )
    op.create_table(
        "round_alert_findings",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("village_code", sa.String(length=12), nullable=False),
        sa.Column("household_no", sa.String(length=64), nullable=False),
        sa.Column("previous_round", sa.String(length=40), nullable=True),
        sa.Column("monitored", sa.Boolean(), nullable=False),
        sa.Column("income_change_percent", sa.Float(), nullable=True),
        sa.Column("expense_rise_percent", sa.Float(), nullable=True),
        sa.Column("problems", json_type, nullable=False),
        sa.Column("reasons", json_type, nullable=False),
        sa.PrimaryKeyConstraint(
            "run_id", "village_code", "household_no", name=op.f("pk_round_alert_findings")
        ),
    )


def downgrade() -> None:
    op.drop_table("round_alert_findings")
    op.drop_index("ix_round_alert_runs_round_started", table_name="round_alert_runs")
    op.drop_table("round_alert_runs")
