"""household indicators: one maintained row per household and round (and one for its newest
records) with the derived 两不愁三保障 indicators, so the dashboard is a GROUP BY

The rows of an existing database are filled by ``python -m server rebuild-indicators`` (the
migration only creates the table: computing pictures needs the form engine and the
monitoring configuration, which a migration should not import).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_FLAGS = (
    "water_quantity_failed",
    "water_quality_failed",
    "water_convenience_failed",
    "water_reliability_failed",
    "has_category",
    "monitored",
    "housing_open",
    "water_open",
    "education_open",
    "insurance_open",
    "income_open",
    "newly_at_risk",
)
_VERDICTS = (
    "housing_safe",
    "water_safe",
    "dropout_present",
    "everyone_insured",
    "income_below_line",
    "all_assured",
    "risk_removed",
)


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "household_indicators",
        sa.Column("round_key", sa.String(length=40), nullable=False),
        sa.Column("village_code", sa.String(length=12), nullable=False),
        sa.Column("household_no", sa.String(length=64), nullable=False),
        sa.Column("round_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("year_floating", sa.Boolean(), nullable=False),
        sa.Column("config_key", sa.String(length=16), nullable=False),
        *(sa.Column(name, sa.Boolean(), nullable=True) for name in _VERDICTS),
        *(sa.Column(name, sa.Boolean(), nullable=False) for name in _FLAGS),
        sa.Column("open_problems", sa.Integer(), nullable=False),
        sa.Column("oldest_problem_on", sa.Date(), nullable=True),
        sa.Column("income_change_percent", sa.Float(), nullable=True),
        sa.Column("expense_rise_percent", sa.Float(), nullable=True),
        sa.Column("per_capita_income", sa.Float(), nullable=True),
        sa.Column("identified_on", sa.Date(), nullable=True),
        sa.Column("picture", json_type, nullable=False),
        sa.PrimaryKeyConstraint(
            "round_key", "village_code", "household_no", name="pk_household_indicators"
        ),
    )
    op.create_index(
        "ix_household_indicators_stale",
        "household_indicators",
        ["config_key", "year_floating", "year"],
    )
    op.create_index(
        "ix_household_indicators_household",
        "household_indicators",
        ["village_code", "household_no"],
    )


def downgrade() -> None:
    op.drop_index("ix_household_indicators_household", table_name="household_indicators")
    op.drop_index("ix_household_indicators_stale", table_name="household_indicators")
    op.drop_table("household_indicators")
