"""household indicators: one maintained row per household and round (and one for its newest
records) with the derived 两不愁三保障 indicators, and their sums per village and round, so the
dashboard adds up villages instead of recomputing households

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


_PROBLEMS = ("housing", "water", "education", "insurance", "income")
_INDEXES = {
    "config": ["config_key"],
    "year": ["year_floating", "year"],
    "household": ["village_code", "household_no"],
    # The lists read in index order: lowest income first, longest identified first.
    "below_line": [
        "round_key",
        "income_below_line",
        "per_capita_income",
        "village_code",
        "household_no",
    ],
    "monitored": ["round_key", "monitored", "identified_on", "village_code", "household_no"],
    "at_risk": ["round_key", "newly_at_risk"],
    **{f"{name}_open": ["round_key", f"{name}_open"] for name in _PROBLEMS},
}
_COUNTS = (
    "households",
    *(f"{name}_{side}" for name in _PROBLEMS for side in ("passing", "failing")),
    "water_quantity_failed",
    "water_quality_failed",
    "water_convenience_failed",
    "water_reliability_failed",
    "all_assured",
    "incomplete",
    "with_category",
    "risk_removed",
    "open_problems",
    *(f"{name}_open" for name in _PROBLEMS),
    "newly_at_risk",
    "monitored",
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
    for name, columns in _INDEXES.items():
        op.create_index(f"ix_household_indicators_{name}", "household_indicators", columns)
    op.create_table(
        "village_indicators",
        sa.Column("round_key", sa.String(length=40), nullable=False),
        sa.Column("village_code", sa.String(length=12), nullable=False),
        sa.Column("round_started_at", sa.DateTime(timezone=True), nullable=True),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in _COUNTS),
        sa.Column("oldest_problem_on", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("round_key", "village_code", name="pk_village_indicators"),
    )


def downgrade() -> None:
    op.drop_table("village_indicators")
    for name in _INDEXES:
        op.drop_index(f"ix_household_indicators_{name}", table_name="household_indicators")
    op.drop_table("household_indicators")
