"""department lists (issue 17): the column mapping each department's file is read with, one
round per imported file, and every row of it sealed at rest (AES-256-GCM) with its match

Revision ID: 0008_department_lists
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_department_lists"
down_revision = "0008"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "department_mappings",
        sa.Column("area", sa.String(length=12), nullable=False),
        sa.Column("department", sa.String(length=32), nullable=False),
        sa.Column("columns", _JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=120), nullable=False),
        sa.PrimaryKeyConstraint("area", "department", name=op.f("pk_department_mappings")),
    )
    op.create_table(
        "department_rounds",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("area", sa.String(length=12), nullable=False),
        sa.Column("department", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=200), nullable=False),
        sa.Column("counts", _JSON, nullable=False),
        sa.Column("signals", _JSON, nullable=False),
        sa.Column("signals_delivered", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_department_rounds")),
        sa.UniqueConstraint(
            "area",
            "department",
            "file_sha256",
            name=op.f("uq_department_rounds_area_department_file_sha256"),
        ),
    )
    op.create_table(
        "department_rows",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("round_id", sa.BigInteger(), nullable=False),
        sa.Column("excel_row", sa.Integer(), nullable=False),
        sa.Column("village_code", sa.String(length=12), nullable=False),
        sa.Column("household_no", sa.String(length=64), nullable=False),
        sa.Column("matched_by", sa.String(length=32), nullable=False),
        sa.Column("problem", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["department_rounds.id"],
            name=op.f("fk_department_rows_round_id_department_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_department_rows")),
    )
    op.create_index("ix_department_rows_round_problem", "department_rows", ["round_id", "problem"])
    op.create_index(
        "ix_department_rows_village_household",
        "department_rows",
        ["village_code", "household_no"],
    )


def downgrade() -> None:
    op.drop_index("ix_department_rows_village_household", table_name="department_rows")
    op.drop_index("ix_department_rows_round_problem", table_name="department_rows")
    op.drop_table("department_rows")
    op.drop_table("department_rounds")
    op.drop_table("department_mappings")
