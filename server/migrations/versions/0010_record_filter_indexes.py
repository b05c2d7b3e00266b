"""record filter indexes: the records API's filters and a village's download as index walks

- ``records (village_code, household_no, form_id, record_id, deleted, round)`` replaces
  ``(village_code, household_no)``: a records page comes out in its order (village, household,
  form, id) without a sort, and its count reads the index alone (deleted and round in it);
- ``records (form_id, village_code, household_no, record_id, deleted, round)``: the ``form_id``
  filter and every export page (one form's live records in household order, keyset) likewise;
- ``records (household_no)``: the ``household_no`` filter without a scan;
- ``records (village_code, revision)``: a village's download pages walk its own revisions
  instead of the county's;
- the five ``household_indicators (round_key, <problem>_open)`` indexes gain ``village_code,
  household_no`` and the column deciding the problem, so ``?indicator=…&failing=…`` reads the
  selected households in order from the index alone.

Revision ID: 0008_record_filter_indexes
Revises: 0008_department_lists
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0008_record_filter_indexes"
down_revision = "0008_department_lists"
branch_labels = None
depends_on = None

#: Problem → the column that decides it (the index carries it: "decided" is read from it too).
_DECIDERS = {
    "housing": "housing_safe",
    "water": "water_safe",
    "education": "dropout_present",
    "insurance": "everyone_insured",
    "income": "income_below_line",
}
_FORM_ORDER = ["form_id", "village_code", "household_no", "record_id", "deleted", "round"]
_HOUSEHOLD_ORDER = ["village_code", "household_no", "form_id", "record_id", "deleted", "round"]


def upgrade() -> None:
    op.drop_index("ix_records_village_household", table_name="records")
    op.create_index("ix_records_household_order", "records", _HOUSEHOLD_ORDER)
    op.create_index("ix_records_form_order", "records", _FORM_ORDER)
    op.create_index("ix_records_household_no", "records", ["household_no"])
    op.create_index("ix_records_village_revision", "records", ["village_code", "revision"])
    for name, decider in _DECIDERS.items():
        index = f"ix_household_indicators_{name}_open"
        op.drop_index(index, table_name="household_indicators")
        op.create_index(
            index,
            "household_indicators",
            ["round_key", f"{name}_open", "village_code", "household_no", decider],
        )


def downgrade() -> None:
    for name in _DECIDERS:
        index = f"ix_household_indicators_{name}_open"
        op.drop_index(index, table_name="household_indicators")
        op.create_index(index, "household_indicators", ["round_key", f"{name}_open"])
    op.drop_index("ix_records_village_revision", table_name="records")
    op.drop_index("ix_records_household_no", table_name="records")
    op.drop_index("ix_records_form_order", table_name="records")
    op.drop_index("ix_records_household_order", table_name="records")
    op.create_index("ix_records_village_household", "records", ["village_code", "household_no"])
