"""Reads behind the indicators dashboard: household records streamed in chunks, open conflicts.

A county holds some 100,000 households and 400,000 records, so nothing here loads them all:
:func:`household_records` pages through the records table with a keyset cursor (village code,
household number, record id) and yields one household at a time. Every query is scoped by a
village-code prefix in SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import ConflictItem, Record
from server.storage.scoping import under_prefix

#: Rows fetched per round trip; bounds memory whatever the size of the county.
CHUNK_ROWS = 2000
#: Conflict status of the review queue that still awaits a reviewer.
OPEN_CONFLICT = "open"


@dataclass(frozen=True)
class StoredRecord:
    """The parts of a stored record the indicators read."""

    record_id: str
    form_id: str
    round: str
    created_at: datetime
    updated_at: datetime
    data: dict[str, Any]


@dataclass
class HouseholdRecords:
    """The live records of one household, every round."""

    village_code: str
    household_no: str
    records: list[StoredRecord] = field(default_factory=list)

    def rounds(self) -> list[str]:
        """The household's survey rounds in the order they were made (first record of each)."""
        first: dict[str, datetime] = {}
        for record in self.records:
            if record.round not in first or record.created_at < first[record.round]:
                first[record.round] = record.created_at
        return sorted(first, key=lambda r: (first[r], r))

    def newest_by_form(self, rounds: set[str] | None = None) -> dict[str, StoredRecord]:
        """Form id → the newest record (made last, then edited last) among ``rounds`` (all)."""
        out: dict[str, StoredRecord] = {}
        for record in self.records:
            if rounds is not None and record.round not in rounds:
                continue
            current = out.get(record.form_id)
            if current is None or (record.created_at, record.updated_at) > (
                current.created_at,
                current.updated_at,
            ):
                out[record.form_id] = record
        return out

    def data_by_form(self, rounds: set[str] | None = None) -> dict[str, dict[str, Any]]:
        """Form id → newest record data, the shape ``household_indicators`` takes."""
        return {form: record.data for form, record in self.newest_by_form(rounds).items()}


def household_records(
    area_prefix: str,
    *,
    round: str | None = None,
    form_ids: tuple[str, ...] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[HouseholdRecords]:
    """Yield the households under ``area_prefix`` (village code, then household number order).

    Only live records (no tombstones) count; ``round`` keeps one survey round, ``form_ids``
    some forms. Memory stays at one chunk of rows plus one household. Raises ``ValueError`` for
    an area prefix that is not digits.
    """
    query = sa.select(
        Record.record_id,
        Record.village_code,
        Record.household_no,
        Record.form_id,
        Record.round,
        Record.created_at,
        Record.updated_at,
        Record.data,
    ).where(under_prefix(Record.village_code, area_prefix), Record.deleted.is_(False))
    if round:
        query = query.where(Record.round == round)
    if form_ids:
        query = query.where(Record.form_id.in_(form_ids))
    order = (Record.village_code, Record.household_no, Record.record_id)
    household: HouseholdRecords | None = None
    last: tuple[str, str, str] | None = None
    while True:
        page = query
        if last is not None:
            page = page.where(sa.tuple_(*order) > sa.tuple_(*(sa.literal(v) for v in last)))
        rows = db.session.execute(page.order_by(*order).limit(chunk_rows)).all()
        for record_id, village, number, form_id, round_, created, updated, data in rows:
            if household is None or (household.village_code, household.household_no) != (
                village,
                number,
            ):
                if household is not None:
                    yield household
                household = HouseholdRecords(village, number)
            household.records.append(
                StoredRecord(record_id, form_id, round_, created, updated, data or {})
            )
        if len(rows) < chunk_rows:
            break
        last = (rows[-1][1], rows[-1][2], rows[-1][0])
    if household is not None:
        yield household


@dataclass(frozen=True)
class ConflictTally:
    """Open conflicts of one village: how many, and when the oldest was queued."""

    count: int
    oldest: datetime


def open_conflicts_by_village(area_prefix: str) -> dict[str, ConflictTally]:
    """Village code → its open conflicts (count, oldest) under ``area_prefix``.

    Raises ``ValueError`` for a prefix that is not digits.
    """
    rows = db.session.execute(
        sa.select(
            ConflictItem.village_code,
            sa.func.count(),
            sa.func.min(ConflictItem.created_at),
        )
        .where(
            ConflictItem.status == OPEN_CONFLICT,
            under_prefix(ConflictItem.village_code, area_prefix),
        )
        .group_by(ConflictItem.village_code)
    ).all()
    return {village: ConflictTally(int(count), oldest) for village, count, oldest in rows}
